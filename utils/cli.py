"""Shared command-line plumbing for the stage scripts.

    parser = stage_parser("Train the SSPQ tokenizer", default_config="configs/tokenizer.yaml")
    parser.add_argument("--resume", action="store_true")
    run_cli(main, parser)

Scripts run as `python stage/script.py` put their own folder, not the repository root, on sys.path;
each script therefore inserts the root itself (`if __package__ in (None, ""): sys.path.insert(...)`)
before its first project import.

`run_cli` turns an `SSPQError` (bad config, data or checkpoint; unwritable, locked or full output folder;
diverged training) into one `error: ...` line on stderr and exit status 2; `--debug` shows the traceback
instead. Ctrl-C exits 130 with one `error: interrupted ...` line (utils.interrupt: a training stage says
what survived and the command that resumes). Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from tqdm import tqdm

from utils.errors import SSPQError


def stage_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (dotted keys for nested fields); repeatable")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def add_scenes_argument(parser: argparse.ArgumentParser) -> None:
    """`--scenes DIR|GLOB|FILE [...]`: the pre-training scenes, replacing the config's list (data/scenes.py)."""
    parser.add_argument("--scenes", nargs="+", default=None, metavar="DIR|GLOB|FILE",
                        help="pre-train on these scenes instead of the config's pretrain_datasets: folders, glob "
                             "patterns or .npz/.npy/.mat/.hdr files; one domain per scene, named by file stem")


def _close_progress_bars() -> None:
    """Close the progress bars the failure cut short, so the error line does not share a line with one."""
    for bar in list(tqdm._instances):
        bar.close()


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    try:
        main(args)
    except SSPQError as err:
        if args.debug:
            raise
        _close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        _close_progress_bars()
        print(f"error: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
