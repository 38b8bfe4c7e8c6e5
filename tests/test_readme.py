"""The README's own commands: the demo command runs end to end and leaves what the README promises."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_names_the_two_commands_ci_runs():
    commands = quick_start_commands()
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def _user_files() -> dict[str, int]:
    """Every file under the working tree's checkpoints/ and outputs/, with its modification time."""
    return {str(p): p.stat().st_mtime_ns for folder in ("checkpoints", "outputs") for p in (ROOT / folder).rglob("*")}


@pytest.mark.slow
def test_readme_demo_command_runs(tmp_path):
    """The demo runs in a copy of the tree (sharing its .venv), so the user's checkpoints/ and outputs/ stay."""
    demo = quick_start_commands()[0]
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".venv", ".git", "checkpoints", "outputs", "results",
                                                              "__pycache__", ".pytest_cache", ".hypothesis"))
    (tree / ".venv").symlink_to(ROOT / ".venv")
    before = _user_files()
    out = subprocess.run(demo, shell=True, cwd=tree, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _user_files() == before, "the demo test wrote into the working tree's checkpoints/ or outputs/"
    result = tree / "outputs" / "synthetic"
    for name in ["anomaly_map.npy", "head_maps.npz", "metrics.json", "anomaly_map.png"]:
        assert (result / name).is_file(), f"demo did not write {name}"
    metrics = json.loads((result / "metrics.json").read_text())
    score = np.load(result / "anomaly_map.npy")
    assert score.ndim == 2 and np.isfinite(score).all()
    assert metrics["fused"]["auc"] > 0.9
    learned = {name: m["auc"] for name, m in metrics["heads"].items() if name not in ("grx", "lrx")}
    assert learned and min(learned.values()) > 0.9, learned  # the learned heads detect on their own, not via RX
    last = out.stderr.strip().splitlines()[-6:]  # the demo ends with Stage 3's summary
    assert all(" summary " in line for line in last) and "ROC AUC fused" in last[2], last


def test_your_own_scenes_section_is_the_two_commands_and_they_parse():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own scenes and sensors", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    assert block.splitlines() == ["python main_pretrain.py --scenes ../shared/data/had",
                                  "python main_anomaly.py --data_path ../shared/data/had/abu-urban-1.npz"]
    import main_anomaly
    import main_pretrain

    assert main_pretrain.build_parser().parse_args(["--scenes", "../shared/data/had"]).scenes == ["../shared/data/had"]
    args = main_anomaly.build_parser().parse_args(["--data_path", "../shared/data/had/abu-urban-1.npz"])
    assert args.data_path == "../shared/data/had/abu-urban-1.npz"
