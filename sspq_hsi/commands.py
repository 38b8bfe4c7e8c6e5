"""`sspq-hsi COMMAND [options]` and `sspq-hsi export KIND [options]`: a command name picks a module, which parses
the rest of the command line itself.

    COMMANDS = {"detect": Command("sspq_hsi.detect", "score scenes: Stage 3 training and inference")}
    sys.exit(dispatch("sspq-hsi", "Hyperspectral anomaly detection", COMMANDS, sys.argv[1:]))

A command's module defines `main(argv: list[str], prog: str) -> int` (the exit status) and is imported only
when it is named, so `sspq-hsi --help` and `sspq-hsi detect --help` load no torch.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # defines main(argv, prog) -> exit status
    summary: str  # its line in the command list


def dispatch(prog: str, description: str, commands: dict[str, Command], argv: list[str]) -> int:
    """Run the command `argv[0]` names with the rest of `argv`; --help, no command or an unknown one are
    answered by argparse (the command list, or a usage error with exit status 2)."""
    listing = "\n".join(f"  {name:<10}{command.summary}" for name, command in commands.items())
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"commands:\n{listing}\n\n`{prog} COMMAND --help` lists a command's options.")
    parser.add_argument("command", choices=list(commands), metavar="COMMAND", help="one of: " + ", ".join(commands))
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the command's options")
    args = parser.parse_args(argv)
    module = importlib.import_module(commands[args.command].module)
    return module.main(args.options, f"{prog} {args.command}")
