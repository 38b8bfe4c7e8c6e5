"""`sspq-hsi export release`: an encoder checkpoint and its tokenizer as a release folder (encoder/release.py)."""

from __future__ import annotations

from pathlib import Path

from encoder.cli_args import release_parser, sensor_table
from utils.cli import parse_cli, run_main
from utils.errors import ConfigError
from utils.logging import get_logger


def export(args) -> None:
    from encoder.release import CONFIG_NAME, write_release  # torch loads once the command line has parsed

    out = Path(args.out)
    if (out / CONFIG_NAME).exists() and not args.overwrite:
        raise ConfigError(f"{out} already holds a release; pass --overwrite to replace it, or choose another --out")
    config = write_release(args.encoder_ckpt, out, sensor_table(args.sensor))
    digests = ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in config["sha256"].items())
    get_logger("pretrain").info(f"wrote the release {out}: {len(config['domains'])} domains, {digests}")


def main(argv: list[str], prog: str) -> int:
    args = parse_cli(release_parser(prog), argv)
    run_main(export, args)
    return 0
