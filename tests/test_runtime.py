"""utils/runtime.py and utils/cli.py: RNG state round trip, device resolution, one-line CLI errors."""

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.errors import ConfigError
from utils.runtime import resolve_device, rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[1]


def test_rng_state_round_trip():
    random.random(), np.random.rand(), torch.rand(1)
    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def draws() -> tuple:
    """A few values from every generator, normals included (python and numpy cache the second of a pair)."""
    return (random.random(), random.gauss(0.0, 1.0), float(np.random.rand()), float(np.random.randn()),
            torch.rand(3).tolist(), torch.randn(2).tolist())


def test_rng_state_survives_weights_only_checkpoint(tmp_path):
    """Through a weights_only checkpoint, every generator restarts exactly where the state was taken."""
    random.gauss(0.0, 1.0), np.random.randn()  # leave a cached Gaussian in python and numpy
    torch.save({"rng": rng_state()}, tmp_path / "r.pth")
    expected = draws()
    moved_on = draws()
    assert moved_on != expected  # the generators moved, so equality below means a real restore
    set_rng_state(torch.load(tmp_path / "r.pth", weights_only=True)["rng"])
    assert draws() == expected


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device("cuda:0")


def test_cli_prints_one_line_error_and_exits_2(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "from utils.cli import run_cli, stage_parser\n"
        "from utils.errors import DataError\n"
        "def main(args):\n    raise DataError('scene.npz: no cube')\n"
        "run_cli(main, stage_parser('t', 'c.yaml', 'python tool.py', {'out/': 'nothing'}))\n" % str(ROOT))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: scene.npz: no cube"
    debug = subprocess.run([sys.executable, str(script), "--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
