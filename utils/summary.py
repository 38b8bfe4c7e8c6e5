"""The end-of-run summary of main_pretrain.py and main_anomaly.py: seconds per stage, what each wrote,
and notes (main_anomaly.py: the ROC AUC per head when the scene has a gt mask).

    summary = RunSummary()
    ckpt = summary.run("Stage 1 tokenizer", train_sspq_tokenizer, config, overrides)   # returns what it returns
    summary.note("10 pre-training scenes, 10 domains")
    summary.log()
    # 14:10:02 summary Stage 1 tokenizer: 212.4 s -> checkpoints/tokenizer/best.pth
    # 14:10:02 summary 10 pre-training scenes, 10 domains
    # 14:10:02 summary total 212.4 s
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from utils.logging import get_logger


@dataclass
class RunSummary:
    stages: list[tuple[str, float, str]] = field(default_factory=list)  # (stage, seconds, what it wrote)
    notes: list[str] = field(default_factory=list)

    def run(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, timed under `stage`; its result (a path) is what the stage wrote."""
        tic = time.perf_counter()
        result = fn(*args, **kwargs)
        self.stages.append((stage, time.perf_counter() - tic, str(result)))
        return result

    def note(self, line: str) -> None:
        self.notes.append(line)

    def lines(self) -> list[str]:
        total = sum(seconds for _, seconds, _ in self.stages)
        return ([f"{stage}: {seconds:.1f} s -> {wrote}" for stage, seconds, wrote in self.stages]
                + self.notes + [f"total {total:.1f} s"])

    def log(self) -> None:
        log = get_logger("summary")
        for line in self.lines():
            log.info(line)

