"""`sspq-hsi`: the installed command (pyproject.toml's [project.scripts] entry point) and its commands."""

from __future__ import annotations

import sys

from sspq_hsi.commands import Command, dispatch

COMMANDS = {
    "detect": Command("sspq_hsi.detect", "score scenes (folders, globs, files, @lists): Stage 3 training and "
                                         "inference per scene, on local workers or a Dask cluster, with a summary"),
    "pretrain": Command("sspq_hsi.pretrain", "Stages 1 + 2: train the tokenizer, then pre-train the encoder "
                                             "(main_pretrain.py)"),
    "export": Command("sspq_hsi.export", "write a model for use elsewhere: `export detector` packs a detector with "
                                         "its encoder and tokenizer"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("sspq-hsi", "Hyperspectral anomaly detection: tokenizer, encoder pre-training, detector.",
                    COMMANDS, sys.argv[1:] if argv is None else argv)
