"""Anomaly heads (spec 6.1): one-class Deep SVDD, per-pixel recon error, code rarity, token -> pixel maps."""

import pytest
import torch

from anomaly.heads import (OneClassHead, code_log_frequencies, compute_code_rarity, compute_recon_error,
                           tokens_to_pixels)
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer


def tiny_tokenizer(patch_size=6, downsample=1, bands=8):
    cfg = TokenizerConfig(num_bands=bands, patch_size=patch_size, stride=3, spatial_downsample=downsample,
                          K_s=8, K_x=8, hidden_dim=8, num_layers=2, band_stride=1, pooled_length=4,
                          encoder_channels=[8])
    torch.manual_seed(0)
    return SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg()).eval()


def test_one_class_has_no_bias_and_a_nonzero_centre():
    head = OneClassHead(hidden_size=16, rep_dim=8)
    assert all(not name.endswith("bias") for name, _ in head.named_parameters())
    with pytest.raises(RuntimeError, match="init_center"):
        head(torch.randn(2, 4, 16))
    head.init_center([torch.zeros(3, 4, 16)])  # all-zero features: c must still be pushed off 0
    assert (head.c.abs() >= head.center_eps - 1e-7).all()
    assert head(torch.zeros(1, 4, 16)).shape == (1, 4)


@pytest.mark.parametrize("per_token, shape", [(True, (5, 9)), (False, (5, 1))])
def test_one_class_scores_and_loss(per_token, shape):
    torch.manual_seed(0)
    hidden = torch.randn(5, 9, 16)
    head = OneClassHead(16, rep_dim=4, per_token=per_token)
    head.init_center([hidden])
    score = head(hidden)
    assert score.shape == shape and (score >= 0).all()
    loss = head.loss(hidden)
    loss.backward()
    assert loss.item() == pytest.approx(score.mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="unsupervised"):
        head.loss(hidden, torch.zeros(shape))


@pytest.mark.parametrize("per_token", [True, False])
def test_one_class_input_is_centred_so_a_shared_offset_cannot_act_as_a_bias(per_token):
    """BERT's final LayerNorm gives every embedding a shared offset; after centring on the training mean, the same
    embeddings shifted by any common vector get the same centre and the same scores."""
    torch.manual_seed(0)
    hidden = torch.randn(6, 9, 16)
    offset = 5.0 * torch.randn(16)
    heads = []
    for data in (hidden, hidden + offset):
        torch.manual_seed(1)  # the same map weights for both
        head = OneClassHead(16, rep_dim=4, per_token=per_token)
        head.init_center([data[:4], data[4:]])  # batches of the training embeddings
        heads.append((head, data))
    (plain, x), (shifted, y) = heads
    torch.testing.assert_close(shifted.mu, plain.mu + offset)
    torch.testing.assert_close(shifted.c, plain.c)
    torch.testing.assert_close(shifted(y), plain(x), rtol=1e-4, atol=1e-5)


def test_one_class_map_runs_in_fp32_inside_autocast():
    head = OneClassHead(16, rep_dim=4)
    head.init_center([torch.randn(3, 4, 16)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head.features(torch.randn(2, 4, 16).bfloat16()).dtype == torch.float32
        assert head(torch.randn(2, 4, 16)).dtype == torch.float32


def test_one_class_svdd_training_pulls_in_embeddings():
    torch.manual_seed(0)
    hidden = torch.randn(64, 4, 16)
    head = OneClassHead(16, rep_dim=8)
    head.init_center([hidden])
    c0 = head.c.clone()
    before = head.loss(hidden).item()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        head.loss(hidden).backward()
        opt.step()
    assert head.loss(hidden).item() < before
    assert torch.equal(head.c, c0)  # the centre is fixed


def test_bce_head_learns_labels():
    torch.manual_seed(0)
    hidden = torch.randn(32, 4, 8)
    labels = (hidden[..., 0] > 1).float()  # (32, 4)
    head = OneClassHead(8, rep_dim=8, objective="bce")
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(200):
        opt.zero_grad()
        head.loss(hidden, labels).backward()
        opt.step()
    score = head(hidden)
    assert score[labels == 1].mean() > score[labels == 0].mean()


def test_tokens_to_pixels_fills_each_cell():
    scores = torch.arange(4.0).reshape(1, 4)  # 2 x 2 grid
    pixels = tokens_to_pixels(scores, 4)
    assert pixels.shape == (1, 4, 4)
    assert torch.equal(pixels[0, :2, :2], torch.zeros(2, 2)) and torch.equal(pixels[0, 2:, 2:], torch.full((2, 2), 3.0))
    same = torch.randn(3, 25)
    assert torch.equal(tokens_to_pixels(same, 5), same.reshape(3, 5, 5))


def test_code_rarity_ranks_rare_codes_higher():
    codes = torch.tensor([[0, 0, 0, 1]])
    counts = torch.bincount(codes.reshape(-1), minlength=3)
    rarity = compute_code_rarity(codes, code_log_frequencies(counts))
    assert rarity[0, 3] > rarity[0, 0] > 0
    assert torch.isfinite(code_log_frequencies(counts)).all()  # unseen code 2 has a finite log frequency


@pytest.mark.parametrize("downsample", [1, 2])
def test_recon_error_is_per_pixel_and_matches_the_tokenizer(downsample):
    tok = tiny_tokenizer(downsample=downsample)
    patches = torch.rand(3, 8, 6, 6)
    with torch.no_grad():
        ids = tok.tokenize(patches)
        err = compute_recon_error(tok, patches, ids)
        assert err.shape == (3, 6, 6)
        assert torch.allclose(err, tok.pixel_recon_error(patches), atol=1e-6)
