"""`sspq-hsi export KIND`: write a trained model in a form that travels. Each kind is a module of its own."""

from __future__ import annotations

from sspq_hsi.commands import Command, dispatch

EXPORTS = {
    "detector": Command("sspq_hsi.export_detector", "a detector with its encoder and tokenizer inside, one file "
                                                    "(anomaly/export_detector.py)"),
    "release": Command("sspq_hsi.export_release", "an encoder and its tokenizer as a release folder: safetensors and "
                                                  "config.json (encoder/release.py), as weights/ is"),
}


def main(argv: list[str], prog: str) -> int:
    return dispatch(prog, "Export a trained model.", EXPORTS, argv)
