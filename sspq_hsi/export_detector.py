"""`sspq-hsi export detector`: anomaly/export_detector.py, whose parser and function it runs."""

from __future__ import annotations

from anomaly.cli_args import export_parser
from utils.cli import parse_cli, run_main


def main(argv: list[str], prog: str) -> int:
    parser = export_parser(prog)
    parser.prog = prog
    args = parse_cli(parser, argv)
    from anomaly.export_detector import main as export  # torch loads once the command line has parsed

    run_main(export, args)
    return 0
