"""Stop training at the first non-finite loss or gradient, with one line naming the stage, epoch and step.

    guard = StepGuard("tokenizer", scaler, last_path, log)
    for epoch in ...:
        guard.begin_epoch(epoch)
        for batch in ...:
            scaler.scale(loss).backward()
            guard.check(loss, model.parameters())   # raises DivergenceError before the optimizer step
            guard.step(optimizer)                   # scaler.step + scaler.update, counting skipped steps

Nothing is written for the failed step: `last.pth` from the last finished epoch (and the best checkpoint)
stay as they were, and `--resume` continues from it. A non-finite loss is divergence in every precision.
With an enabled GradScaler (fp16 on CUDA) inf/NaN gradients are the scaler's business: it skips the step
and lowers its scale; those skipped steps are counted and logged, and only MAX_SKIPPED_IN_A_ROW of them
in a row (the scale fallen by 2**20) count as divergence.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Protocol

import torch

from utils.errors import DivergenceError
from utils.interrupt import note_epoch

MAX_SKIPPED_IN_A_ROW = 20


class Scaler(Protocol):
    """What the guard uses of torch.amp.GradScaler (tests pass a fake)."""

    def is_enabled(self) -> bool: ...
    def get_scale(self) -> float: ...
    def step(self, optimizer: torch.optim.Optimizer) -> object: ...
    def update(self) -> None: ...


class StepGuard:
    def __init__(self, stage: str, scaler: Scaler, last_path: Path, log: logging.Logger) -> None:
        self.stage, self.scaler, self.last_path, self.log = stage, scaler, last_path, log
        self.epoch, self.step_in_epoch = 0, 0
        self.skipped, self.skipped_in_a_row = 0, 0

    def begin_epoch(self, epoch: int) -> None:
        """`epoch` 0-based; also tells utils.interrupt where the run is."""
        self.epoch, self.step_in_epoch = epoch, 0
        note_epoch(epoch, self.last_path)

    def _where(self) -> str:
        return f"{self.stage} training diverged in epoch {self.epoch + 1}, step {self.step_in_epoch}"

    def _diverged(self, reason: str) -> DivergenceError:
        if self.last_path.is_file():
            kept = (f"{self.last_path} (the last finished epoch) is kept: continue from it with --resume, or "
                    f"lower the learning rate and start afresh")
        else:
            kept = "no checkpoint had been written yet: lower the learning rate and start afresh"
        return DivergenceError(f"{self._where()}: {reason}; {kept}")

    def check(self, loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter]) -> None:
        """After backward, before the optimizer step: raise DivergenceError on a non-finite loss, or (no
        enabled scaler) on a non-finite gradient."""
        self.step_in_epoch += 1
        loss = loss.detach()
        if not bool(torch.isfinite(loss).all()):
            raise self._diverged(f"the loss is {float(loss.float().sum())}")
        if self.scaler.is_enabled():
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:
            finite = torch.stack([torch.isfinite(g).all() for g in grads])  # (P,) bool
            bad = int((~finite).sum())
            if bad:
                raise self._diverged(f"non-finite gradients in {bad} of {len(grads)} parameter tensors")

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """scaler.step + scaler.update; a step the scaler skipped (its scale fell) is counted and logged."""
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        if not self.scaler.is_enabled() or self.scaler.get_scale() >= scale:
            self.skipped_in_a_row = 0
            return
        self.skipped += 1
        self.skipped_in_a_row += 1
        self.log.warning(f"{self.stage}: fp16 GradScaler skipped epoch {self.epoch + 1}, step {self.step_in_epoch} "
                         f"(inf/NaN gradients; scale {scale:g} -> {self.scaler.get_scale():g}); "
                         f"{self.skipped} skipped so far")
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise self._diverged(f"{self.skipped_in_a_row} steps in a row had inf/NaN gradients under fp16 "
                                 f"(GradScaler scale down to {self.scaler.get_scale():g})")
