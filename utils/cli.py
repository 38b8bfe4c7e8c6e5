"""Shared command-line plumbing for the scripts: parse first, import torch after.

    # sspq_tokenizer/cli_args.py (imports neither torch nor transformers)
    def tokenizer_parser():
        parser = stage_parser("Train the SSPQ tokenizer", "configs/tokenizer.yaml",
                              example="python sspq_tokenizer/train_tokenizer.py",
                              writes={"<output_dir>/best.pth": "the best epoch's tokenizer"},
                              config_class="sspq_tokenizer.config:TokenizerConfig")  # --help lists its keys
        parser.add_argument("--resume", action="store_true", help="...")
        return parser

    # sspq_tokenizer/train_tokenizer.py
    from sspq_tokenizer.cli_args import tokenizer_parser as build_parser
    if __name__ == "__main__":  # before torch loads: --help and usage errors answer at once
        ARGS = parse_cli(build_parser())
    import torch
    ...
    if __name__ == "__main__":
        run_main(main, ARGS)

Every script keeps its parser in a `cli_args.py` of its package, which imports neither torch nor transformers,
and parses (and runs its `check`, a cheap pre-flight such as the output-folder clash) before its own heavy
imports; `--help` shows each option's default, an example command, the files the script writes and the config
keys with their defaults and help texts (from the config dataclass's field metadata, imported only for --help).

Scripts run as `python stage/script.py` put their own folder, not the repository root, on sys.path;
each script therefore inserts the root itself (`if __package__ in (None, ""): sys.path.insert(...)`)
before its first project import.

`run_main` (and `parse_cli`'s check) turns an `SSPQError` (bad config, data or checkpoint; unwritable, locked or
full output folder; diverged training) into one `error: ...` line on stderr and exit status 2; `--debug` shows the
traceback instead. Ctrl-C exits 130 with one `error: interrupted ...` line (utils.interrupt: a training stage says
what survived and the command that resumes). Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from typing import Callable, Iterator, TypeVar

from tqdm import tqdm

from utils.errors import SSPQError

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks and appends each option's default to its help, except where there is
    none to show (None, a flag's False, an empty list) or the help names it itself."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class ScriptParser(argparse.ArgumentParser):
    """An ArgumentParser whose --help ends with the config keys of `config_keys` ((option, "module:Class") pairs):
    each key's type, default and help text, read from the config dataclass's field metadata when the help is
    shown (the dataclass is the one place they are written; docs/configuration.md is written from it too)."""

    config_keys: tuple[tuple[str, str], ...] = ()

    def format_help(self) -> str:
        return super().format_help() + "".join(config_keys_help(option, ref) for option, ref in self.config_keys)


def config_keys_help(option: str, ref: str) -> str:
    """The --help section of config dataclass `ref` ("package.module:Class"), whose keys `option` sets."""
    import importlib

    from utils.config import config_rows

    module, name = ref.split(":")
    cls = getattr(importlib.import_module(module), name)
    lines = [f"\nconfig keys ({option} KEY=VALUE; the defaults of {name}, {module.replace('.', '/')}.py; a --config "
             f"file may set others, see docs/configuration.md):"]
    for key, type_name, default, help_text in config_rows(cls):
        nested = default == "(see below)"  # a nested dataclass: its keys follow, dotted
        lines.append(f"  {key} ({type_name})" if nested else f"  {key} ({type_name}, default: {default})")
        lines.append(textwrap.fill(help_text, 100, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                   break_on_hyphens=False, break_long_words=False))
    return "\n".join(lines) + "\n"


def script_parser(description: str, example: str, writes: dict[str, str],
                  config_keys: tuple[tuple[str, str], ...] = ()) -> argparse.ArgumentParser:
    """A parser whose --help ends with one example command and the files the script writes (`writes`: each
    path and what it holds); with --debug."""
    files = "\n".join(f"  {path}\n" + textwrap.fill(what, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
                      for path, what in writes.items())
    epilog = f"example:\n  {example}\n\nwrites:\n{files}"
    parser = ScriptParser(description=description, epilog=epilog, formatter_class=HelpFormatter)
    parser.config_keys = tuple(config_keys)
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def stage_parser(description: str, default_config: str | None, example: str, writes: dict[str, str],
                 config_class: str | None = None,
                 extra_keys: tuple[tuple[str, str], ...] = ()) -> argparse.ArgumentParser:
    """A script parser with --config and --set; --help lists `config_class`'s keys ("module:Class"), then
    `extra_keys`' ((option, "module:Class") pairs). `default_config` None: the config dataclass's own defaults
    (what configs/*.yaml repeat), for the installed `sspq-hsi` command, which runs from any folder."""
    keys = ((("--set", config_class),) if config_class else ()) + tuple(extra_keys)
    parser = script_parser(description, example, writes, keys)
    parser.add_argument("--config", default=default_config,
                        help="YAML config file" + ("" if default_config else " (default: the built-in defaults, "
                                                                              "which configs/ repeats)"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (dotted keys for nested fields); repeatable")
    return parser


def add_scenes_argument(parser: argparse.ArgumentParser) -> None:
    """`--scenes DIR|GLOB|FILE [...]`: the pre-training scenes, replacing the config's list (data/scenes.py)."""
    parser.add_argument("--scenes", nargs="+", default=None, metavar="DIR|GLOB|FILE|@LIST",
                        help="pre-train on these scenes instead of the config's pretrain_datasets: folders, glob "
                             "patterns, scene files or @LIST (a text file of those, one per line); one domain per "
                             "scene, named by file stem")


def _close_progress_bars() -> None:
    """Close the progress bars the failure cut short, so the error line does not share a line with one."""
    for bar in list(tqdm._instances):
        bar.close()


@contextlib.contextmanager
def _one_line_errors(debug: bool) -> Iterator[None]:
    try:
        yield
    except SSPQError as err:
        if debug:
            raise
        _close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        _close_progress_bars()
        print(f"error: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)


def parse_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None,
              check: Callable[[argparse.Namespace], object] | None = None) -> argparse.Namespace:
    """Parse the command line, then run `check(args)` (a pre-flight that imports no torch) under the same
    one-line error handling as `run_main`."""
    args = parser.parse_args(argv)
    if check is not None:
        with _one_line_errors(args.debug):
            check(args)
    return args


def run_main(main: Callable[[argparse.Namespace], T], args: argparse.Namespace) -> T:
    """`main(args)` under the one-line error handling; returns what it returns (`sspq-hsi`'s exit status)."""
    with _one_line_errors(args.debug):
        return main(args)


def run_cli(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
            argv: list[str] | None = None) -> None:
    """Parse and run in one call, for callers that import the script module anyway (tests, benchmarks)."""
    run_main(main, parse_cli(parser, argv))
