"""Console logging and progress for the stage scripts (models never log).

    log = get_logger("tokenizer")                  # stages: data, tokenizer, pretrain, anomaly, summary, benchmark
    log.info("4 scenes loaded")                    # 14:02:07 tokenizer 4 scenes loaded
    for batch in progress(batches, "epoch 1/5"):   # a tqdm bar on a terminal, nothing in a log file
        ...
    for tile in progress(tiles, "scoring", log=log):   # ... or one line per 10% of the loop in a log file

Every stage logs through one handler on the `sspq` logger, in one format: `HH:MM:SS stage message`
(`HH:MM:SS stage warning: message` from WARNING up). The handler writes to whatever `sys.stderr` is at
the time, through `tqdm.write` so that a line never lands inside a progress bar. Progress bars are drawn
only when stderr is a terminal (`bars_wanted`): in a file their carriage-return redraws are junk.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

from tqdm import tqdm

ROOT = "sspq"
PERCENT_STEP = 10  # a loop's progress line in a log file, every this many percent


class StageFormatter(logging.Formatter):
    """`HH:MM:SS stage message`, the stage being the logger's name below `sspq.`."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        stage = record.name.removeprefix(f"{ROOT}.")
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{self.formatTime(record, self.datefmt)} {stage} {level}{record.getMessage()}"


class StderrHandler(logging.Handler):
    """Writes each record to the current sys.stderr (so redirects and captures see it), above any bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own contract: a failed write must not raise
            self.handleError(record)


def _root_logger() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not root.handlers:
        handler = StderrHandler()
        handler.setFormatter(StageFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root


def get_logger(stage: str = "data") -> logging.Logger:
    """The logger of `stage`; every stage shares the one handler of the `sspq` logger."""
    _root_logger()
    return logging.getLogger(f"{ROOT}.{stage}")


def bars_wanted(stream: TextIO | None = None) -> bool:
    """Whether progress bars suit `stream` (default sys.stderr): only a terminal redraws them cleanly."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class PercentLines:
    """A loop's progress as one log line per PERCENT_STEP % of `total` items: `desc: 30% (3/10), 4.2 s`."""

    def __init__(self, iterable: Iterable[Any], desc: str, total: int, log: logging.Logger) -> None:
        self.iterable, self.desc, self.total, self.log = iterable, desc, total, log

    def __iter__(self) -> Iterator[Any]:
        start, last_step = time.perf_counter(), 0
        for done, item in enumerate(self.iterable, 1):
            yield item
            step = done * 100 // (PERCENT_STEP * self.total) if self.total else 0
            if step > last_step:
                last_step = step
                self.log.info(f"{self.desc}: {done * 100 // self.total}% ({done}/{self.total}), "
                              f"{time.perf_counter() - start:.1f} s")


def progress(iterable: Iterable[Any], desc: str, total: int | None = None, log: logging.Logger | None = None,
             show: bool = True) -> Any:
    """Progress over `iterable`: a tqdm bar when stderr is a terminal; otherwise, with `log`, one line
    per 10% of the loop (for long loops that are silent until they end), and without it none (for loops
    whose end is logged anyway, like an epoch). `show=False` (e.g. a non-zero DDP rank) draws nothing anywhere.
    The result iterates like `iterable`; a bar (drawn or not) also has tqdm's `set_postfix` and `close`."""
    if show and bars_wanted():
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)
    if show and log is not None:
        total = len(iterable) if total is None else total  # type: ignore[arg-type]
        return PercentLines(iterable, desc, total, log)
    return tqdm(iterable, total=total, disable=True)
