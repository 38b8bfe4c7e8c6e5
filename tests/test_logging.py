"""Logs a person can read: one `HH:MM:SS stage message` format, tqdm bars on a terminal only, one line per
10% of a long loop in a log file, and no carriage-return progress junk there."""

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from utils.logging import bars_wanted, get_logger, progress

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\d\d:\d\d:\d\d [a-z_]+ ")
# a tiny "stage": an epoch loop (bar, no lines) and a long loop (bar, or 10% lines), then one log line
LOOPS = ("from utils.logging import get_logger, progress\n"
         "import time\n"
         "log = get_logger('pretrain')\n"
         "for _ in progress(range(30), 'epoch 1/1'): time.sleep(0.003)\n"
         "for _ in progress(range(40), 'scoring', log=log): time.sleep(0.003)\n"
         "log.info('done')\n")


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_stages_share_one_format(capsys):
    get_logger("tokenizer").info("4 scenes loaded")
    get_logger("anomaly").warning("no gt mask")
    get_logger().info("cube found")
    lines = capsys.readouterr().err.splitlines()
    assert [LINE.sub("", line) for line in lines] == ["4 scenes loaded", "warning: no gt mask", "cube found"]
    assert [line.split()[1] for line in lines] == ["tokenizer", "anomaly", "data"]
    assert all(LINE.match(line) for line in lines)


@pytest.mark.parametrize("stream, wanted", [(FakeStream(True), True), (FakeStream(False), False),
                                            (object(), False)])
def test_bars_only_on_a_terminal(stream, wanted):
    assert bars_wanted(stream) is wanted


def test_progress_picks_bar_lines_or_nothing(monkeypatch):
    log = get_logger("anomaly")
    monkeypatch.setattr(sys, "stderr", FakeStream(True))
    assert type(progress(range(3), "x")).__name__ == "tqdm" and not progress(range(3), "x").disable
    assert progress(range(3), "x", show=False).disable  # a non-zero DDP rank: nothing, even on a terminal
    monkeypatch.setattr(sys, "stderr", FakeStream(False))
    assert progress(range(3), "x").disable  # an epoch loop in a file: its epoch line says enough
    assert type(progress(range(3), "x", log=log)).__name__ == "PercentLines"


def test_a_long_loop_logs_one_line_per_ten_percent(capsys):
    items = list(progress(range(200), "scoring tiles", log=get_logger("anomaly")))
    assert items == list(range(200))
    lines = capsys.readouterr().err.splitlines()
    assert [re.search(r"scoring tiles: (\d+)% \((\d+)/200\)", line).groups() for line in lines] == [
        (str(p), str(2 * p)) for p in range(10, 101, 10)]


def _run(stderr) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LOOPS], cwd=ROOT, stderr=stderr, stdout=subprocess.DEVNULL,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_log_file_gets_clean_lines(tmp_path):
    log_file = tmp_path / "run.log"
    with open(log_file, "w") as handle:
        assert _run(handle).returncode == 0
    text = log_file.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert len(lines) == 11 and "scoring: 100% (40/40)" in lines[-2] and lines[-1].endswith("pretrain done")


def test_a_terminal_gets_bars():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    try:
        proc = _run(follower)
        os.close(follower)
        follower = None
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "\r" in text and "epoch 1/1: " in text and "/30 [" in text and "/40 [" in text
    assert "scoring:" in text and "scoring: 10%" not in text  # a bar, not the file's percent lines
