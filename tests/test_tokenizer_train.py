"""Stage 1 training script (spec 4.4): learning, checkpoints, --resume, both command forms, real scenes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data.synthetic import make_synthetic_scene
from sspq_tokenizer.checkpoint import load_tokenizer
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from sspq_tokenizer.train_tokenizer import (build_parser, epoch_line, evaluate, load_patches, main, split_indices,
                                            train_sspq_tokenizer)
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli
from utils.config import load_config
from utils.errors import CheckpointError, ConfigError
from utils.logging import get_logger

ROOT = Path(__file__).resolve().parents[1]
HAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "had"

TINY = {"num_bands": 16, "patch_size": 6, "stride": 3, "K_s": 8, "K_x": 8, "hidden_dim": 8, "num_layers": 2,
        "band_stride": 2, "pooled_length": 4, "encoder_channels": [8], "batch_size": 8, "num_epochs": 4,
        "val_fraction": 0.2, "cpu_threads": 1, "seed": 3}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the script sets cpu_threads=1; give the other tests theirs back


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    scene = make_synthetic_scene(height=24, width=24, num_bands=32, seed=1)
    path = tmp_path_factory.mktemp("scene") / "tiny.npz"
    np.savez(path, cube=scene.cube, gt=scene.gt)
    return path


def write_config(path: Path, scene_file: Path, **kw) -> Path:
    data = dict(TINY, output_dir=str(path.parent / "out"),
                pretrain_datasets=[{"name": "tiny", "data_path": str(scene_file), "domain_id": 0}])
    data.update(kw)
    path.write_text(yaml.safe_dump(data))
    return path


def untrained_val_error(cfg_path: Path) -> float:
    cfg = load_config(TokenizerConfig, cfg_path)
    torch.manual_seed(cfg.seed)
    patches = load_patches(cfg, get_logger("test"))
    _, val_idx = split_indices(len(patches), cfg.val_fraction, cfg.seed)
    model = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())
    return evaluate(model, patches[val_idx], cfg, torch.device("cpu"))["val_recon"]


def test_training_lowers_val_error_and_keeps_codes_in_use(tmp_path, scene_file):
    cfg_path = write_config(tmp_path / "tok.yaml", scene_file, num_epochs=6)
    best = train_sspq_tokenizer(cfg_path)
    ckpt = load_checkpoint(best, "tokenizer")
    metrics = ckpt["metrics"]
    assert metrics["val_recon"] < 0.5 * untrained_val_error(cfg_path)
    assert metrics["spectral_usage"] >= 0.5 and metrics["spatial_usage"] >= 0.5, metrics
    assert metrics["val_recon_continuous"] > 0
    last = load_checkpoint(tmp_path / "out" / "last.pth", "tokenizer")
    assert last["epoch"] == 5 and set(last) >= {"optimizer", "scaler", "rng", "metrics", "config"}
    tok, _ = load_tokenizer(best)
    assert tok.joint_vocab_size == 64 and tok.num_tokens == 36


def test_resume_equals_uninterrupted_run(tmp_path, scene_file):
    (tmp_path / "full").mkdir()
    (tmp_path / "part").mkdir()
    full = write_config(tmp_path / "full" / "tok.yaml", scene_file)
    part = write_config(tmp_path / "part" / "tok.yaml", scene_file)
    train_sspq_tokenizer(full)
    train_sspq_tokenizer(part, ["num_epochs=2"])
    assert load_checkpoint(tmp_path / "part" / "out" / "last.pth", "tokenizer")["epoch"] == 1
    train_sspq_tokenizer(part, resume=True)
    a = load_checkpoint(tmp_path / "full" / "out" / "last.pth", "tokenizer")
    b = load_checkpoint(tmp_path / "part" / "out" / "last.pth", "tokenizer")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-6, rtol=0), key
    assert a["metrics"]["val_recon"] == pytest.approx(b["metrics"]["val_recon"], abs=1e-6)


def test_resume_errors(tmp_path, scene_file):
    cfg_path = write_config(tmp_path / "tok.yaml", scene_file, num_epochs=1)
    with pytest.raises(CheckpointError, match="no .*last.pth to resume from"):
        train_sspq_tokenizer(cfg_path, resume=True)
    train_sspq_tokenizer(cfg_path)
    with pytest.raises(ConfigError, match=r"different config \(K_s\)"):
        train_sspq_tokenizer(cfg_path, ["K_s=16", "num_epochs=2"], resume=True)


@pytest.mark.parametrize("command", [["sspq_tokenizer/train_tokenizer.py"], ["-m", "sspq_tokenizer.train_tokenizer"]])
def test_both_command_forms_run(tmp_path, scene_file, command):
    cfg_path = write_config(tmp_path / "tok.yaml", scene_file)
    out = tmp_path / "cli_out"
    run = subprocess.run([sys.executable, *command, "--config", str(cfg_path), "--set", "num_epochs=1",
                          "--set", f"output_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (out / "best.pth").is_file() and (out / "last.pth").is_file()
    assert "code perplexity spectral" in run.stderr


def test_cli_turns_user_errors_into_one_line(tmp_path, scene_file, capsys):
    cfg_path = write_config(tmp_path / "tok.yaml", scene_file)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, build_parser(), ["--config", str(cfg_path), "--set", "K_z=4"])
    assert exit_info.value.code == 2
    assert "unknown config key 'K_z'" in capsys.readouterr().err


def test_trains_on_real_scenes(tmp_path):
    scenes = sorted(HAD.glob("*.npz"))[:2]
    if not scenes:
        pytest.skip(f"real benchmark scenes not found in {HAD} (they live outside the repository)")
    entries = [{"name": p.stem, "data_path": str(p), "domain_id": i} for i, p in enumerate(scenes)]
    cfg_path = tmp_path / "tok.yaml"
    cfg_path.write_text(yaml.safe_dump(dict(TINY, num_bands=32, num_epochs=2, max_patches_per_scene=60,
                                            pretrain_datasets=entries, output_dir=str(tmp_path / "out"))))
    best = train_sspq_tokenizer(cfg_path)
    metrics = load_checkpoint(best, "tokenizer")["metrics"]
    assert np.isfinite(metrics["val_recon"]) and metrics["val_recon"] < untrained_val_error(cfg_path)


def test_an_epoch_line_stays_readable():
    """Under 140 characters (160 with the `HH:MM:SS tokenizer ` prefix) at the GPU sizes and slow epochs."""
    cfg = load_config(TokenizerConfig, "configs/tokenizer_gpu.yaml", ["num_epochs=100"])
    metrics = {"epoch_seconds": 12345.6, "train_loss": 12.345678, "val_recon": 1.2345678,
               "val_recon_continuous": 0.1234, "spectral_perplexity": 255.9, "spatial_perplexity": 123.4}
    line = epoch_line(99, cfg, metrics, improved=True)
    assert line.startswith("epoch 100/100 12346s: loss 12.3457, val recon 1.23457") and line.endswith(" best")
    assert "spectral 256 of 256, spatial 123 of 256" in line and len(line) < 140, (len(line), line)
