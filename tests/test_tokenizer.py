"""Stage 1 models (spec 4.1-4.3): joint ids, shapes, decoding, codebook and checkpoint round trips, config."""

from pathlib import Path

import pytest
import torch
import yaml

from sspq_tokenizer.checkpoint import load_tokenizer
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from sspq_tokenizer.quantizer import codebook_usage
from utils.checkpoint import save_checkpoint
from utils.config import load_config, to_dict
from utils.errors import CheckpointError, ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]

# (spectral_tokens, spatial_downsample, patch_size): the token grid is patch_size / downsample wide
GRID_CASES = [("grid", 1, 6), ("grid", 2, 6), ("grid", 3, 6), ("patch", 1, 5)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared CPU
    yield
    torch.set_num_threads(threads)


def tiny_config(**kw) -> TokenizerConfig:
    args = dict(num_bands=16, patch_size=6, stride=3, K_s=8, K_x=16, hidden_dim=8, num_layers=2, band_stride=2,
                pooled_length=4, encoder_channels=[8])
    args.update(kw)
    cfg = TokenizerConfig(**args)
    cfg.validate()
    return cfg


def tiny_tokenizer(seed=0, **kw) -> tuple[SSPQTokenizer, TokenizerConfig]:
    cfg = tiny_config(**kw)
    torch.manual_seed(seed)
    return SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg()), cfg


def patches_for(cfg: TokenizerConfig, n=12, seed=1) -> torch.Tensor:
    return torch.rand(n, cfg.num_bands, cfg.patch_size, cfg.patch_size, generator=torch.Generator().manual_seed(seed))


def warmed(tok: SSPQTokenizer, patches: torch.Tensor) -> SSPQTokenizer:
    """One train-mode forward (k-means initialises the codebooks), then eval mode."""
    tok.train()
    tok(patches)
    return tok.eval()


@pytest.mark.parametrize("K_s, K_x", [(8, 16), (16, 8), (2, 2), (64, 64)])
def test_joint_id_round_trip(K_s, K_x):
    tok, _ = tiny_tokenizer(K_s=K_s, K_x=K_x)
    k, m = torch.meshgrid(torch.arange(K_s), torch.arange(K_x), indexing="ij")  # (K_s, K_x) each
    joint = k + K_s * m
    assert joint.min() == 0 and joint.max() == K_s * K_x - 1 == tok.joint_vocab_size - 1
    assert len(joint.unique()) == K_s * K_x
    k2, m2 = tok.split_joint_ids(joint)
    assert torch.equal(k2, k) and torch.equal(m2, m)


@pytest.mark.parametrize("mode, downsample, patch_size", GRID_CASES)
def test_forward_shapes_and_ids(mode, downsample, patch_size):
    tok, cfg = tiny_tokenizer(spectral_tokens=mode, spatial_downsample=downsample, patch_size=patch_size)
    x = patches_for(cfg)
    n, b, s = x.shape[0], cfg.num_bands, cfg.patch_size
    t = (s // downsample) ** 2
    assert tok.grid_size == s // downsample and tok.num_tokens == t
    out = tok(x, return_recon=True)
    assert t > 1
    for key in ("joint_ids", "spectral_ids", "spatial_ids"):
        assert out[key].shape == (n, t) and out[key].dtype == torch.int64
    assert torch.equal(out["joint_ids"], out["spectral_ids"] + tok.K_s * out["spatial_ids"])
    assert out["spectral_ids"].max() < tok.K_s and out["spatial_ids"].max() < tok.K_x
    assert out["joint_ids"].min() >= 0 and out["joint_ids"].max() < tok.joint_vocab_size
    if mode == "patch":  # one spectral code per patch, repeated over the grid
        assert (out["spectral_ids"] == out["spectral_ids"][:, :1]).all()
    for key in ("recon_s", "recon_x", "recon", "recon_continuous"):
        assert out[key].shape == (n, b, s, s)
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    for key in ("spectral_recon_loss", "spectral_vq_loss", "spectral_commitment_loss", "spatial_recon_loss",
                "spatial_vq_loss", "spatial_commitment_loss", "fusion_recon_loss"):
        assert out["loss_dict"][key].shape == ()


@pytest.mark.parametrize("mode, downsample, patch_size", GRID_CASES)
def test_decode_from_ids_matches_forward(mode, downsample, patch_size):
    tok, cfg = tiny_tokenizer(spectral_tokens=mode, spatial_downsample=downsample, patch_size=patch_size)
    x = patches_for(cfg)
    warmed(tok, x)
    with torch.inference_mode():
        out = tok(x, return_recon=True)
        assert torch.equal(tok.tokenize(x), out["joint_ids"])
        recon = tok.decode_joint_ids(out["joint_ids"])
        assert recon.shape == x.shape
        assert torch.allclose(recon, out["recon"], atol=1e-6)
        err = tok.pixel_recon_error(x)
    assert err.shape == (x.shape[0], cfg.patch_size, cfg.patch_size)
    assert torch.allclose(err, (recon - x).pow(2).mean(dim=1), atol=1e-6)


def test_eval_mode_does_not_move_the_codebooks():
    tok, cfg = tiny_tokenizer()
    x = patches_for(cfg)
    warmed(tok, x)
    before = [tok.spectral_vqvae.quantizer.codebook.clone(), tok.spatial_vqvae.quantizer.codebook.clone()]
    with torch.inference_mode():
        tok(patches_for(cfg, seed=5))
    assert torch.equal(before[0], tok.spectral_vqvae.quantizer.codebook)
    assert torch.equal(before[1], tok.spatial_vqvae.quantizer.codebook)
    tok.train()
    tok(patches_for(cfg, seed=5))  # train mode: EMA updates do move them
    assert not torch.equal(before[0], tok.spectral_vqvae.quantizer.codebook)


def test_bad_inputs_are_errors():
    tok, cfg = tiny_tokenizer()
    with pytest.raises(DataError, match=r"expects patches \(N, 16, 6, 6\)"):
        tok(torch.rand(2, 12, 6, 6))
    with pytest.raises(ValueError, match=r"joint ids must lie in \[0, 128\)"):
        tok.decode_joint_ids(torch.full((1, tok.num_tokens), 128))
    with pytest.raises(ValueError, match=r"must be \(N, 36\)"):
        tok.decode_joint_ids(torch.zeros(1, 35, dtype=torch.long))


def test_codebook_save_load_round_trip(tmp_path):
    tok, cfg = tiny_tokenizer()
    x = patches_for(cfg)
    warmed(tok, x)
    with torch.inference_mode():
        ids = tok.tokenize(x)
    tok.save_codebooks(tmp_path / "codebooks.pt")
    other, _ = tiny_tokenizer()
    other.load_state_dict(tok.state_dict())
    other.eval()
    with torch.no_grad():  # scramble the copy's codebooks: ids must change, then come back on load
        other.spectral_vqvae.quantizer.vq.codebook = torch.randn(cfg.K_s, cfg.hidden_dim)
        other.spatial_vqvae.quantizer.vq.codebook = torch.randn(cfg.K_x, cfg.hidden_dim)
    with torch.inference_mode():
        assert not torch.equal(other.tokenize(x), ids)
    other.load_codebooks(tmp_path / "codebooks.pt")
    with torch.inference_mode():
        assert torch.equal(other.tokenize(x), ids)
    bigger, _ = tiny_tokenizer(K_s=16)
    with pytest.raises(CheckpointError, match="do not fit this tokenizer"):
        bigger.load_codebooks(tmp_path / "codebooks.pt")
    with pytest.raises(CheckpointError, match="not found"):
        tok.load_codebooks(tmp_path / "missing.pt")


def test_a_loaded_checkpoint_gives_identical_ids(tmp_path):
    tok, cfg = tiny_tokenizer(spatial_downsample=2)
    x = patches_for(cfg)
    warmed(tok, x)
    with torch.inference_mode():
        ids = tok.tokenize(x)
    path = save_checkpoint(tmp_path / "best.pth", "tokenizer", to_dict(cfg), tok.state_dict())
    loaded, ckpt = load_tokenizer(path)
    assert not loaded.training and ckpt["config"]["spatial_downsample"] == 2
    with torch.inference_mode():
        assert torch.equal(loaded.tokenize(x), ids)
    wrong = save_checkpoint(tmp_path / "wrong.pth", "tokenizer", to_dict(tiny_config(K_s=16)), tok.state_dict())
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_tokenizer(wrong)
    enc = save_checkpoint(tmp_path / "enc.pth", "encoder", to_dict(cfg), tok.state_dict())
    with pytest.raises(CheckpointError, match="encoder checkpoint"):
        load_tokenizer(enc)


def test_codebook_usage_statistics():
    stats = codebook_usage(torch.tensor([[0, 1], [2, 3]]), 8)
    assert stats["used"] == 4 and stats["usage"] == 0.5
    assert stats["perplexity"] == pytest.approx(4.0)
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == pytest.approx(1.0)


@pytest.mark.parametrize("overrides, message", [
    (["patch_size=7", "spatial_downsample=2"], "divisible by spatial_downsample"),
    (["kernel_size=4"], "kernel_size must be odd"),
    (["K_s=1"], "K_s must be >= 2"),
    (["val_fraction=1.0"], "val_fraction must lie in"),
    (["band_stride=3"], "divide num_bands"),
    (["spectral_tokens=pixel"], "spectral_tokens must be one of"),
    (["normalize=l2"], "normalize must be one of"),
    (["K_z=3"], "unknown config key 'K_z'"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TokenizerConfig, ROOT / "configs" / "tokenizer.yaml", overrides)


@pytest.mark.parametrize("name", ["tokenizer.yaml", "tokenizer_gpu.yaml"])
def test_shipped_configs_load_and_comment_every_key(name):
    path = ROOT / "configs" / name
    cfg = load_config(TokenizerConfig, path)
    assert cfg.grid_size ** 2 > 1
    data = yaml.safe_load(path.read_text())
    lines = path.read_text().splitlines()
    for key in data:
        line = next(line for line in lines if line.startswith(f"{key}:"))
        assert "#" in line, f"{name}: key '{key}' has no comment"
    SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())  # the shipped sizes build


def test_tokenize_and_decode_ignore_an_outer_autocast():
    """Stage 3 scores under autocast on CUDA; the ids must stay the fp32 ids Stage 2 trained on."""
    tok, cfg = tiny_tokenizer()
    patches = patches_for(cfg, n=16)
    tok = warmed(tok, patches)
    with torch.no_grad():
        ids = tok.tokenize(patches)
        recon = tok.decode_joint_ids(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ids_amp = tok.tokenize(patches)
            recon_amp = tok.decode_joint_ids(ids_amp)
    assert torch.equal(ids, ids_amp)
    assert recon_amp.dtype == torch.float32 and torch.equal(recon, recon_amp)
