"""`sspq-hsi`: the installed command (pyproject.toml's [project.scripts] entry point) and its commands."""

from __future__ import annotations

import sys

from sspq_hsi.commands import Command, dispatch

COMMANDS = {
    "detect": Command("sspq_hsi.detect", "score many scenes: Stage 3 training and inference of each, a summary"),
    "pretrain": Command("sspq_hsi.pretrain", "Stages 1 + 2: the tokenizer, then the encoder (main_pretrain.py)"),
    "export": Command("sspq_hsi.export", "write a trained model that travels (export detector)"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("sspq-hsi", "Hyperspectral anomaly detection: tokenizer, encoder pre-training, detector.",
                    COMMANDS, sys.argv[1:] if argv is None else argv)
