"""utils/config.py on the README's oldest Python (3.9): `X | None` field types load (scripts/check_configs.py).

The 3.9 run needs an interpreter with pyyaml and numpy: `SSPQ_PYTHON39=/path/to/python3.9`, else the first
`~/.pyenv/versions/3.9*/bin/python` or `python3.9` on PATH that has them; skipped when there is none.
"""

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import utils.config as config
from anomaly.config import AnomalyConfig
from encoder.config import PretrainConfig
from sspq_tokenizer.config import TokenizerConfig

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_configs.py"
CLASSES = [(AnomalyConfig, "configs/anomaly.yaml"), (PretrainConfig, "configs/pretrain.yaml"),
           (TokenizerConfig, "configs/tokenizer.yaml")]


def python39() -> str | None:
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")))
    candidates = [os.environ.get("SSPQ_PYTHON39"), *pyenv, shutil.which("python3.9")]
    for exe in filter(None, candidates):
        probe = subprocess.run([exe, "-c", "import sys, yaml, numpy; assert sys.version_info[:2] == (3, 9)"],
                               capture_output=True)
        if probe.returncode == 0:
            return exe
    return None


@pytest.mark.parametrize("cls,path", CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_union_fallback_reads_the_same_types(cls, path, monkeypatch):
    """The 3.9 path (get_type_hints refusing `X | None`) on this interpreter: same hints, same config."""
    want_hints, want_cfg = config.type_hints(cls), config.load_config(cls, ROOT / path, ["seed=3"])

    def refuse(_cls):
        raise TypeError("unsupported operand type(s) for |: 'type' and 'NoneType'")

    monkeypatch.setattr(config.typing, "get_type_hints", refuse)
    assert config.type_hints(cls) == want_hints
    assert config.load_config(cls, ROOT / path, ["seed=3"]) == want_cfg


def test_every_config_loads_on_this_python():
    run = subprocess.run([sys.executable, str(CHECK)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_config_loads_on_python39():
    exe = python39()
    if exe is None:
        pytest.skip("no Python 3.9 with pyyaml and numpy (set SSPQ_PYTHON39)")
    run = subprocess.run([exe, str(CHECK)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "Python 3.9" in run.stdout, run.stdout + run.stderr
