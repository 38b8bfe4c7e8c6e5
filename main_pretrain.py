"""Stages 1 + 2 from one command: train the SSPQ tokenizer, then pre-train the encoder on its tokens.

    python main_pretrain.py --config configs/pretrain.yaml
    python main_pretrain.py --scenes ../shared/data/had                # your scenes: a folder, globs or files
    python main_pretrain.py --config configs/pretrain.yaml --tokenizer_config configs/tokenizer.yaml \
        --set pretrain_epochs=5 --tokenizer_set num_epochs=3

The tokenizer trains on the PRETRAIN config's `pretrain_datasets` (they replace the tokenizer config's
list, so both stages see the same scenes) and writes `{tokenizer output_dir}/best.pth`; Stage 2 then
runs with `tokenizer_ckpt` set to that file. `--scenes DIR|GLOB|FILE [...]` replaces that list (one
domain per scene, named by file stem: data/scenes.py). `--set` overrides the pretrain config, `--tokenizer_set`
the tokenizer config. This runs in one process; for multi-GPU Stage 2 run the two stages separately
(`torchrun ... encoder/pretrain_mtp.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python main_pretrain.py` from elsewhere: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder.cli_args import pipeline_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import yaml  # noqa: E402

from data.scenes import scene_overrides  # noqa: E402
from encoder.config import PretrainConfig  # noqa: E402
from encoder.pretrain_mtp import pretrain_universal_hsi  # noqa: E402
from sspq_tokenizer.train_tokenizer import train_sspq_tokenizer  # noqa: E402
from utils.config import load_config, to_dict  # noqa: E402
from utils.logging import get_logger  # noqa: E402
from utils.summary import RunSummary  # noqa: E402


def run_pretraining(config: str | Path, tokenizer_config: str | Path = "configs/tokenizer.yaml",
                    overrides: list[str] | None = None, tokenizer_overrides: list[str] | None = None) -> Path:
    """Stage 1 on the pretrain config's scenes, then Stage 2 with that tokenizer; returns the encoder path."""
    cfg = load_config(PretrainConfig, config, overrides)  # validated before an hour of Stage 1 starts
    scenes = yaml.safe_dump(to_dict(cfg)["pretrain_datasets"], default_flow_style=True, width=1 << 20).strip()
    summary = RunSummary()
    tokenizer_ckpt = summary.run("Stage 1 tokenizer", train_sspq_tokenizer, tokenizer_config,
                                 list(tokenizer_overrides or []) + [f"pretrain_datasets={scenes}"])
    get_logger("pretrain").info(f"Stage 2 starts on the tokens of {tokenizer_ckpt}")
    encoder_ckpt = summary.run("Stage 2 pre-training", pretrain_universal_hsi, config, overrides,
                               tokenizer_ckpt=tokenizer_ckpt)
    names = [entry.name for entry in cfg.pretrain_datasets]
    summary.note(f"{len(names)} pre-training scene(s) ({names[0]}{' ... ' + names[-1] if len(names) > 1 else ''}), "
                 f"{cfg.num_domains} domain(s)")
    summary.log()
    return encoder_ckpt


def main(args) -> None:
    run_pretraining(args.config, args.tokenizer_config, scene_overrides(args.scenes, args.overrides),
                    args.tokenizer_overrides)


if __name__ == "__main__":
    run_main(main, ARGS)
