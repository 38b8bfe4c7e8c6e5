"""The Stage 2 command lines: both script forms and main_pretrain.py turn a bad config into one line + exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # each run imports torch + transformers afresh (the script form runs in test_distributed.py)
@pytest.mark.parametrize("entry", [["-m", "encoder.pretrain_mtp"], ["main_pretrain.py"]])
def test_bad_mask_ratio_is_one_line_and_exit_2(entry):
    run = subprocess.run([sys.executable, *entry, "--config", "configs/pretrain.yaml", "--set", "mask_ratio=1.5"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().startswith("error: --set mask_ratio=1.5: mask_ratio must lie strictly between 0 and 1")
    assert "Traceback" not in run.stderr
