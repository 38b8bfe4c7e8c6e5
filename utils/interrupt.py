"""Ctrl-C (SIGINT) during a training stage: one line saying what survived and the command that resumes.

    @interruptible("tokenizer")
    def train_sspq_tokenizer(...): ...          # guard.begin_epoch(epoch) notes the epoch and last.pth

SIGINT raises KeyboardInterrupt as usual, wherever the run is. `interruptible` turns it into
`Interrupted`, whose message names the stage and the epoch cut short and, when `{output_dir}/last.pth`
exists, the command that continues from it (last.pth is written at every epoch end; `held()` lets a
checkpoint write that is under way finish before the interrupt is raised). `utils.cli.run_cli` prints
it as `error: ...` and exits 130. The steps of the unfinished epoch are redone on --resume.
"""

from __future__ import annotations

import functools
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(KeyboardInterrupt):
    """SIGINT during a training stage; str() is the one-line message."""


@dataclass
class Progress:
    stage: str
    epoch: int | None = None  # 0-based epoch under way
    last_path: Path | None = None


_ACTIVE: list[Progress] = []


def note_epoch(epoch: int, last_path: Path | None) -> None:
    """Record the epoch under way of the innermost `interruptible` stage (no-op outside one)."""
    if _ACTIVE:
        _ACTIVE[-1].epoch, _ACTIVE[-1].last_path = epoch, last_path


def command(argv: list[str], resume: bool) -> str:
    """The command line that ran this process, with --resume added when `resume`."""
    args = [arg for arg in argv if arg != "--resume"] + (["--resume"] if resume else [])
    return "python " + shlex.join(args)


def describe(progress: Progress, argv: list[str]) -> str:
    where = (f"{progress.stage} training, epoch {progress.epoch + 1}" if progress.epoch is not None
             else f"{progress.stage} training, before its first epoch")
    if progress.last_path is not None and progress.last_path.is_file():
        return f"interrupted in {where}; {progress.last_path} holds the last finished epoch; continue with: " \
               f"{command(argv, resume=True)}"
    return f"interrupted in {where}, before its first checkpoint: nothing to resume; run again: " \
           f"{command(argv, resume=False)}"


def interruptible(stage: str) -> Callable[[F], F]:
    """Decorate a stage's training function: KeyboardInterrupt inside it becomes `Interrupted`."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            progress = Progress(stage)
            _ACTIVE.append(progress)
            try:
                return fn(*args, **kwargs)
            except Interrupted:
                raise
            except KeyboardInterrupt:
                raise Interrupted(describe(progress, sys.argv)) from None
            finally:
                _ACTIVE.remove(progress)
        return run  # type: ignore[return-value]
    return decorate


@contextmanager
def held() -> Iterator[None]:
    """Defer SIGINT until the block is done (main thread only: Python runs signal handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)
