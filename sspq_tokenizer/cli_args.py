"""The Stage 1 command line (sspq_tokenizer/train_tokenizer.py): its parser, importing neither torch nor
transformers, so that `--help` and usage errors answer before the script's heavy imports (utils/cli.py)."""

from __future__ import annotations

import argparse

from utils.cli import add_scenes_argument, stage_parser

TOKENIZER_CONFIG = "sspq_tokenizer.config:TokenizerConfig"  # the dataclass whose keys --help lists
TOKENIZER_WRITES = {"<output_dir>/best.pth": "the tokenizer of the epoch with the lowest validation reconstruction "
                                              "error (output_dir: checkpoints/tokenizer in configs/tokenizer.yaml)",
                    "<output_dir>/last.pth": "the latest epoch's state, for --resume"}


def tokenizer_parser() -> argparse.ArgumentParser:
    parser = stage_parser("Train the SSPQ tokenizer (Stage 1)", "configs/tokenizer.yaml",
                          "python sspq_tokenizer/train_tokenizer.py --scenes ../shared/data/had", TOKENIZER_WRITES,
                          TOKENIZER_CONFIG)
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pth")
    add_scenes_argument(parser)
    return parser
