"""The Stage 2 command lines (encoder/pretrain_mtp.py, and main_pretrain.py for Stages 1 + 2): their parsers,
importing neither torch nor transformers, so that `--help` and usage errors answer before the scripts' heavy
imports (utils/cli.py)."""

from __future__ import annotations

import argparse

from sspq_tokenizer.cli_args import TOKENIZER_CONFIG, TOKENIZER_WRITES
from utils.cli import add_scenes_argument, script_parser, stage_parser
from utils.errors import ConfigError

PRETRAIN_CONFIG = "encoder.config:PretrainConfig"  # the dataclass whose keys --help lists
ENCODER_WRITES = {"<output_dir>/universal_hsi_encoder.pth": "the encoder of the epoch with the best mean validation "
                                                           "NLL (output_dir: checkpoints/encoder in configs/pretrain.yaml)",
                  "<output_dir>/last.pth": "the latest epoch's state, for --resume"}


def pretrain_parser() -> argparse.ArgumentParser:
    parser = stage_parser("Stage 2: cross-domain masked-token pre-training of the HSI encoder", "configs/pretrain.yaml",
                          "python encoder/pretrain_mtp.py --tokenizer_ckpt checkpoints/tokenizer/best.pth "
                          "--scenes ../shared/data/had", ENCODER_WRITES, PRETRAIN_CONFIG)
    parser.add_argument("--tokenizer_ckpt", default=None,
                        help="Stage 1 checkpoint (default: the config's tokenizer_ckpt)")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pth")
    add_scenes_argument(parser)
    return parser


def pipeline_parser(command: str = "python main_pretrain.py", builtin_configs: bool = False
                    ) -> argparse.ArgumentParser:
    """main_pretrain.py's parser; `sspq-hsi pretrain` (`command`) defaults to the configs' built-in values
    (`builtin_configs`), since the installed command runs from any folder, where configs/ may not be."""
    parser = stage_parser("Stages 1 + 2: SSPQ tokenizer, then cross-domain encoder pre-training",
                          None if builtin_configs else "configs/pretrain.yaml",
                          f"{command} --scenes ../shared/data/had",
                          {**{f"tokenizer {path}": what for path, what in TOKENIZER_WRITES.items()},
                           **{f"encoder {path}": what for path, what in ENCODER_WRITES.items()}},
                          PRETRAIN_CONFIG, (("--tokenizer_set", TOKENIZER_CONFIG),))
    parser.add_argument("--tokenizer_config", default=None if builtin_configs else "configs/tokenizer.yaml",
                        help="Stage 1 YAML config" + (" (default: the built-in defaults, which configs/ repeats)"
                                                      if builtin_configs else ""))
    parser.add_argument("--tokenizer_set", dest="tokenizer_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a tokenizer config field; repeatable")
    add_scenes_argument(parser)
    return parser


def release_parser(prog: str = "sspq-hsi export release") -> argparse.ArgumentParser:
    """`sspq-hsi export release`: an encoder checkpoint and its tokenizer as a release folder (encoder/release.py)."""
    parser = script_parser("Write an encoder checkpoint and its tokenizer as a release folder: safetensors weights, "
                           "config.json (configs, domain table, sha256 per file)",
                           f"{prog} --encoder_ckpt checkpoints/encoder/universal_hsi_encoder.pth --out my_release "
                           f"--sensor '*=AVIRIS' --sensor hydice-urban=HYDICE",
                           {"<out>/tokenizer.safetensors, <out>/encoder.safetensors": "the two stages' weights",
                            "<out>/config.json": "architecture, preprocessing, domain table, sha256 of each file"})
    parser.prog = prog
    parser.add_argument("--encoder_ckpt", required=True, help="Stage 2 checkpoint (it names its tokenizer)")
    parser.add_argument("--out", required=True, help="release folder to write")
    parser.add_argument("--sensor", action="append", default=[], metavar="SCENE=SENSOR",
                        help="the sensor of a pre-training scene (repeat); '*=SENSOR' for every scene not named")
    parser.add_argument("--overwrite", action="store_true", help="replace a release already in --out")
    return parser


def sensor_table(pairs: list[str]) -> dict[str, str]:
    """--sensor SCENE=SENSOR pairs as a dict ('*' = every scene not named); ConfigError on a malformed pair."""
    table: dict[str, str] = {}
    for pair in pairs:
        scene, sep, sensor = pair.partition("=")
        if not sep or not scene.strip() or not sensor.strip():
            raise ConfigError(f"--sensor {pair!r}: expected SCENE=SENSOR (or '*=SENSOR')")
        table[scene.strip()] = sensor.strip()
    return table
