"""Stage 2 end to end on a tiny synthetic setup: learning, checkpoint contents, reproducible validation, resume."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import encoder.pretrain_mtp as pretrain_mtp
from data.io import load_scene
from data.preprocess import prepare_cube
from encoder.checkpoint import load_encoder
from encoder.config import PretrainConfig
from sspq_tokenizer.checkpoint import load_tokenizer
from sspq_tokenizer.train_tokenizer import train_sspq_tokenizer
from utils.checkpoint import load_checkpoint, sha256_file
from utils.config import load_config
from utils.errors import CheckpointError, ConfigError

TINY_TOKENIZER = ["num_epochs=1", "max_patches_per_scene=60", "hidden_dim=8", "encoder_channels=[8]",
                  "K_s=16", "K_x=16", "num_bands=16", "cpu_threads=1", "augment=false"]


def tiny_overrides(out: Path, epochs: int = 3) -> list[str]:
    return [f"output_dir={out}", f"pretrain_epochs={epochs}", "steps_per_epoch=12", "num_warmup_steps=4",
            "pretrain_batch_size=16", "learning_rate_pretrain=3e-3", "bert_config.hidden_size=32",
            "bert_config.num_attention_heads=2", "bert_config.intermediate_size=64", "cpu_threads=1", "device=cpu"]


@pytest.fixture(scope="module")
def tokenizer_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    return train_sspq_tokenizer("configs/tokenizer.yaml", TINY_TOKENIZER + [f"output_dir={out}", "device=cpu"])


@pytest.fixture(scope="module")
def trained(tokenizer_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("enc")
    return pretrain_mtp.pretrain_universal_hsi("configs/pretrain.yaml", tiny_overrides(out), tokenizer_ckpt)


def test_short_run_lowers_validation_loss(trained):
    ckpt = load_checkpoint(trained, "encoder")
    history = ckpt["metrics"]["history"]
    assert [h["epoch"] for h in history][0] == 0 and len(history) >= 2
    assert min(h["val_nll"] for h in history[1:]) < history[0]["val_nll"] - 1.0, history


def test_checkpoint_describes_itself(trained, tokenizer_ckpt):
    ckpt = load_checkpoint(trained, "encoder")
    assert ckpt["parent"] == {"path": str(Path(tokenizer_ckpt).resolve()), "sha256": sha256_file(tokenizer_ckpt),
                              "relative": os.path.relpath(Path(tokenizer_ckpt).resolve(), Path(trained).resolve().parent)}
    assert ckpt["domains"] == {"synthetic": 0}
    tok_cfg = load_checkpoint(tokenizer_ckpt, "tokenizer")["config"]  # Stage 3's `domain_id: auto` matches these
    scene = load_scene("synthetic")
    prepared = prepare_cube(scene.cube, tok_cfg["num_bands"], tok_cfg["normalize"], scene.wavelengths)  # (H, W, B)
    assert list(ckpt["domain_spectra"]) == ["synthetic"]
    assert np.allclose(ckpt["domain_spectra"]["synthetic"], prepared.reshape(-1, prepared.shape[-1]).mean(axis=0))
    assert ckpt["config"]["encoder_args"] == ckpt["encoder_args"] and ckpt["config"]["mask_ratio"] == 0.35
    per_domain = ckpt["metrics"]["per_domain"]["synthetic"]
    assert {"acc", "nll", "ppl", "baseline_acc", "baseline_ppl", "masked"} <= set(per_domain)
    assert set(Path(trained).parent.iterdir()) == {trained, Path(trained).parent / "last.pth"}


def test_reloaded_encoder_reproduces_the_stored_validation_metrics(trained, tokenizer_ckpt):
    """Reload the checkpoint, re-tokenise, rebuild the seeded validation masks: the same scores come out."""
    encoder, ckpt = load_encoder(trained)
    cfg = load_config(PretrainConfig, None, [f"tokenizer_ckpt={tokenizer_ckpt}"])  # the synthetic scene
    tokenizer, tok_ckpt = load_tokenizer(tokenizer_ckpt)
    grids = pretrain_mtp.tokenize_scenes(cfg, tokenizer, tok_ckpt["config"], torch.device("cpu"))
    gen = torch.Generator().manual_seed(ckpt["config"]["seed"])
    masks = [encoder.sample_mask(g.val, gen) for g in grids]
    again = pretrain_mtp.evaluate(encoder, grids, masks, torch.device("cpu"), amp=False)
    stored = ckpt["metrics"]["per_domain"]["synthetic"]
    assert again["per_domain"]["synthetic"]["nll"] == pytest.approx(stored["nll"], abs=1e-5)
    assert again["per_domain"]["synthetic"]["acc"] == pytest.approx(stored["acc"])
    assert again["per_domain"]["synthetic"]["spectrum_nmse"] == pytest.approx(stored["spectrum_nmse"], abs=1e-5)


def test_resume_continues_exactly(tokenizer_ckpt, tmp_path, monkeypatch):
    straight = pretrain_mtp.pretrain_universal_hsi("configs/pretrain.yaml", tiny_overrides(tmp_path / "a", 2),
                                                   tokenizer_ckpt)
    real_save = pretrain_mtp.save_checkpoint

    def save_then_stop(path, *args, **kwargs):
        real_save(path, *args, **kwargs)
        if Path(path).name == "last.pth":
            raise KeyboardInterrupt  # interrupted right after epoch 1's checkpoint

    monkeypatch.setattr(pretrain_mtp, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        pretrain_mtp.pretrain_universal_hsi("configs/pretrain.yaml", tiny_overrides(tmp_path / "b", 2), tokenizer_ckpt)
    monkeypatch.setattr(pretrain_mtp, "save_checkpoint", real_save)
    resumed = pretrain_mtp.pretrain_universal_hsi("configs/pretrain.yaml", tiny_overrides(tmp_path / "b", 2),
                                                  tokenizer_ckpt, resume=True)
    a = load_checkpoint(Path(straight).parent / "last.pth", "encoder")
    b = load_checkpoint(Path(resumed).parent / "last.pth", "encoder")
    assert a["step"] == b["step"] == 24
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    with pytest.raises(ConfigError, match="different config"):
        pretrain_mtp.pretrain_universal_hsi("configs/pretrain.yaml", tiny_overrides(tmp_path / "b", 2)
                                            + ["mask_ratio=0.4"], tokenizer_ckpt, resume=True)


def test_resume_without_last_checkpoint_is_an_error(tokenizer_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"--resume: no .*last.pth to resume from"):
        pretrain_mtp.pretrain_universal_hsi("configs/pretrain.yaml", tiny_overrides(tmp_path), tokenizer_ckpt,
                                            resume=True)


@pytest.mark.parametrize("override,message", [
    ("mask_ratio=1.5", "mask_ratio"), ("num_domains=0", "num_domains"), ("mask_strategy=blocks", "mask_strategy"),
    ("bert_config.num_layers=2", "bert_config"), ("val_fraction=0.7", "val_fraction"),
    ("bert_config.hidden_size=30", "multiple of num_attention_heads"),
])
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, "configs/pretrain.yaml", [override])


def test_gpu_config_is_valid():
    cfg = load_config(PretrainConfig, "configs/pretrain_gpu.yaml")
    assert cfg.bert_config.get("hidden_size", 768) == 768 or cfg.load_pretrained_lm
