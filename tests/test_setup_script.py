"""scripts/setup.sh with a stand-in .venv python that records each call: the torch index is passed only when
SSPQ_TORCH_INDEX_URL is set, only to the torch install, and pip runs without -q (its progress shows)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../../calls.log"
[ "$1" = "-c" ] && exit 1   # 'import torch' fails: torch is not installed yet
exit 0
"""


def run_setup(tmp_path: Path, **env: str) -> list[str]:
    """Run a copy of setup.sh (no GPU on PATH) in `tmp_path`; returns the stand-in python's calls."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(ROOT / "requirements.txt", tmp_path / "requirements.txt")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    path = ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "nvidia-smi").exists())
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": path, "HOME": str(tmp_path), **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    (tmp_path / "calls.log").unlink()
    return calls


@pytest.mark.parametrize("env, torch_call", [
    ({}, "-m pip install torch==2.13.0"),
    ({"SSPQ_TORCH_INDEX_URL": CPU_INDEX}, f"-m pip install torch==2.13.0 --index-url {CPU_INDEX}"),
    ({"SSPQ_TORCH_INDEX_URL": CPU_INDEX, "SSPQ_TORCH_SPEC": "torch==2.8.0"},
     f"-m pip install torch==2.8.0 --index-url {CPU_INDEX}"),
])
def test_torch_index_only_when_set_and_only_for_torch(tmp_path, env, torch_call):
    calls = run_setup(tmp_path, **env)
    assert calls == ["-c import torch", torch_call, "-m pip install -r requirements.txt"]


def test_unchanged_requirements_are_not_reinstalled(tmp_path):
    assert run_setup(tmp_path)[-1] == "-m pip install -r requirements.txt"
    assert run_setup(tmp_path) == ["-c import torch", "-m pip install torch==2.13.0"]  # requirements: as last time
    with open(tmp_path / ".venv" / ".sspq-requirements.txt", "a") as f:  # as if requirements.txt had changed since
        f.write("rich>=13\n")
    assert run_setup(tmp_path)[-1] == "-m pip install -r requirements.txt"
