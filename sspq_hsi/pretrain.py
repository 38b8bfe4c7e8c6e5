"""`sspq-hsi pretrain`: Stages 1 + 2, main_pretrain.py's parser and function, with the built-in configs (which
configs/pretrain.yaml and configs/tokenizer.yaml repeat) unless --config / --tokenizer_config name files.
Multi-node pre-training runs Stage 2 under torchrun instead (docs/usage.md)."""

from __future__ import annotations

from encoder.cli_args import pipeline_parser
from utils.cli import parse_cli, run_main


def main(argv: list[str], prog: str) -> int:
    parser = pipeline_parser(prog, builtin_configs=True)
    parser.prog = prog
    args = parse_cli(parser, argv)
    from main_pretrain import main as pretrain  # torch loads once the command line has parsed

    run_main(pretrain, args)
    return 0
