"""benchmarks/gpu_check.sh: its CPU dry run end to end (the GPU run's code path, tiny models) and its refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.gpu_check import build_parser, run
from utils.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["Stage 1 tokenizer", "Stage 2 pre-training", "Stage 3 training", "inference scene0"]


def _write_scenes(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(2):
        cube = (rng.normal(size=(20, 20, 12)) @ rng.normal(size=(12, 12)) + 50).astype(np.float32)
        gt = np.zeros((20, 20), dtype=np.uint8)
        for r, c in [(5, 6), (13, 14)]:
            cube[r, c] += 8 * rng.normal(size=12).astype(np.float32)
            gt[r, c] = 1
        np.savez(folder / f"scene{i}.npz", cube=cube, gt=gt)


def _tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.slow
def test_dry_run_writes_the_json_and_table_and_nothing_in_the_checkout(tmp_path):
    _write_scenes(tmp_path / "had")
    before = {name: _tree(ROOT / name) for name in ("checkpoints", "outputs")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry_run", "--scenes",
                           str(tmp_path / "had"), "--scene", "scene0.npz", "--work_dir", str(tmp_path / "work"),
                           "--scale_size", "32"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "work" / "gpu_check.json").read_text())
    assert data["device"] == "cpu" and data["dry_run"] and data["tiny"]
    assert data["gpu_name"] is None and data["amp_dtype"] is None
    assert [row["name"] for row in data["stages"]] == STAGES
    for row in data["stages"]:
        assert row["seconds"] > 0 and row["peak_gpu_mb"] is None
        assert Path(row["wrote"]).resolve().is_relative_to((tmp_path / "work").resolve())
    inference = data["stages"][-1]
    assert inference["shape"] == [20, 20, 12] and inference["pixels_per_second"] > 0
    assert 0.0 <= inference["auc_fused"] <= 1.0
    scale = data["scale_case"]
    assert "error" not in scale and scale["shape"] == [32, 32, 128]
    assert scale["seconds"] > 0 and scale["pixels_per_second"] > 0 and scale["global_rx_seconds"] > 0
    assert scale["peak_gpu_mb"] is None and scale["peak_rss_mb"] > 0
    assert all("device=cpu" in sets and "amp=true" in sets for sets in data["overrides"].values())
    assert data["total_seconds"] > 0
    out = proc.stdout
    assert f"writes everything under {tmp_path / 'work'}" in out  # says where before it starts
    for name in STAGES + ["scale case, ours 32x32x128", "scale case, global RX 32x32x128"]:
        assert name in out
    assert "peak GPU MiB" in out and "gpu_check.json" in out.splitlines()[-1]
    assert {name: _tree(ROOT / name) for name in ("checkpoints", "outputs")} == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    _write_scenes(tmp_path / "had")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--scenes",
                           str(tmp_path / "had"), "--scene", "scene0.npz", "--work_dir", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: --device cuda requested but torch.cuda.is_available() is false")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("argv, match", [
    (["--scene", "nope.npz"], "--scene nope.npz: no such file"),
    (["--work_dir", str(ROOT / "checkpoints" / "gpu")], "inside the checkout's checkpoints/"),
    (["--work_dir", str(ROOT / "outputs")], "inside the checkout's outputs/"),
])
def test_refusals_before_anything_runs(tmp_path, argv, match):
    _write_scenes(tmp_path / "had")
    args = build_parser().parse_args(["--dry_run", "--scenes", str(tmp_path / "had"), "--scene", "scene0.npz",
                                      "--work_dir", str(tmp_path / "work"), *argv])
    with pytest.raises(ConfigError, match=match):
        run(args)
