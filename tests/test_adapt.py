"""Label-free adaptation (anomaly/adapt.py): only the scored scene's domain row moves, and the loss falls."""

import numpy as np
import torch

from anomaly.adapt import adapt_domain_row, scene_windows
from tests.test_blind_spot import BANDS, tiny_models


def test_only_the_scenes_domain_row_moves_and_the_loss_falls():
    tokenizer, encoder = tiny_models()
    encoder.domain_embedding = torch.nn.Embedding(3, encoder.hidden_size)
    encoder.requires_grad_(False)  # frozen, as Stage 3 holds it
    cube = np.random.default_rng(0).random((20, 20, BANDS), dtype=np.float32)
    ids, spectra = scene_windows(tokenizer, cube, None, 4, 16, torch.device("cpu"))
    assert ids.shape == (16, 64) and spectra.shape == (16, 64, BANDS)  # 4 x 4 windows inside the 20 x 20 scene
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    losses = adapt_domain_row(encoder, ids, spectra, domain_id=1, steps=30, lr=0.05, batch_size=8, seed=0)
    after = encoder.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved == ["domain_embedding.weight"]
    table_before, table_after = before["domain_embedding.weight"], after["domain_embedding.weight"]
    assert torch.equal(table_before[[0, 2]], table_after[[0, 2]]) and not torch.equal(table_before[1], table_after[1])
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
