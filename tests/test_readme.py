"""The README's own commands: the demo command runs end to end and leaves what the README promises."""

import json
import re
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


@pytest.mark.slow
def test_readme_demo_command_runs(tmp_path):
    demo = quick_start_commands()[0]
    out = subprocess.run(demo, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    result = ROOT / "outputs" / "synthetic"
    for name in ["anomaly_map.npy", "head_maps.npz", "metrics.json", "anomaly_map.png"]:
        assert (result / name).is_file(), f"demo did not write {name}"
    metrics = json.loads((result / "metrics.json").read_text())
    score = np.load(result / "anomaly_map.npy")
    assert score.ndim == 2 and np.isfinite(score).all()
    assert metrics["fused"]["auc"] > 0.9
