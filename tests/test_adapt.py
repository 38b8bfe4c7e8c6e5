"""Label-free fitting to the scored scene (anomaly/adapt.py): only the scene's domain row (and LoRA adapters) move,
the loss falls, and the fitted encoder still predicts every core from its context alone."""

import numpy as np
import pytest
import torch

from anomaly.adapt import fit_to_scene, scene_windows
from anomaly.config import LoraSettings
from anomaly.lora import inject_lora
from tests.test_blind_spot import BANDS, H, W, assert_the_core_is_blind, tiny_models


def test_only_the_scenes_domain_row_moves_and_the_loss_falls():
    tokenizer, encoder = tiny_models()
    encoder.domain_embedding = torch.nn.Embedding(3, encoder.hidden_size)
    encoder.requires_grad_(False)  # frozen, as Stage 3 holds it
    cube = np.random.default_rng(0).random((20, 20, BANDS), dtype=np.float32)
    ids, spectra = scene_windows(tokenizer, cube, None, 4, 16, torch.device("cpu"))
    assert ids.shape == (16, 64) and spectra.shape == (16, 64, BANDS)  # 4 x 4 windows inside the 20 x 20 scene
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    losses = fit_to_scene(encoder, ids, spectra, domain_id=1, steps=30, lr=0.05, batch_size=8, seed=0)
    after = encoder.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved == ["domain_embedding.weight"]
    table_before, table_after = before["domain_embedding.weight"], after["domain_embedding.weight"]
    assert torch.equal(table_before[[0, 2]], table_after[[0, 2]]) and not torch.equal(table_before[1], table_after[1])
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


def lora_fitted(steps=30):
    """A tiny encoder with LoRA adapters fitted to a random scene: (tokenizer, encoder, scene, state before, losses)."""
    tokenizer, encoder = tiny_models()
    encoder.requires_grad_(False)
    inject_lora(encoder, LoraSettings(r=2, alpha=4.0, target_modules=["query", "value"]))
    encoder.requires_grad_(False)
    cube = np.random.default_rng(0).random((H, W, BANDS), dtype=np.float32)
    ids, spectra = scene_windows(tokenizer, cube, None, 2, 16, torch.device("cpu"))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    losses = fit_to_scene(encoder, ids, spectra, domain_id=0, steps=steps, lr=0.05, batch_size=8, seed=0)
    return tokenizer, encoder, cube, before, losses


def test_a_lora_fit_moves_only_the_adapters_and_the_domain_row():
    _, encoder, _, before, losses = lora_fitted()
    after = encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert "domain_embedding.weight" in moved and any("lora_B" in k for k in moved)
    assert all(k == "domain_embedding.weight" or "lora_" in k for k in moved)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


@torch.no_grad()
def test_the_fitted_encoder_keeps_the_blind_spot():
    """Fitting on the scene's own windows cannot let a pixel see itself: the core's prediction of the fitted encoder
    does not move when the pixels under the core change, and does when a context pixel does."""
    tokenizer, encoder, cube, _, _ = lora_fitted()
    assert_the_core_is_blind(tokenizer, encoder, cube, "block", 0, (10, 9))


def test_a_diverging_fit_stops_with_one_named_error():
    from utils.errors import DivergenceError

    tokenizer, encoder = tiny_models()
    encoder.requires_grad_(False)
    cube = np.random.default_rng(0).random((H, W, BANDS), dtype=np.float32)
    ids, spectra = scene_windows(tokenizer, cube, None, 2, 16, torch.device("cpu"))
    spectra[0, 0, 0] = float("nan")  # one poisoned value: the first step that samples it diverges
    with pytest.raises(DivergenceError, match="scene fit: the loss is nan .* lower adapt_lr"):
        fit_to_scene(encoder, ids, spectra, domain_id=0, steps=200, lr=0.05, batch_size=len(ids), seed=0)
