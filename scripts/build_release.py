"""Rebuild the released universal encoder (weights/) from the 13 shared scenes.

    python scripts/build_release.py                       # ../shared/data/had + ../shared/data/pretrain -> weights/
    python scripts/build_release.py --data DIR --out weights_new --workdir runs/release --seed 0

Paths are relative to the repository root. Stages 1-2 run with the repository's default configs
(configs/tokenizer.yaml, configs/pretrain.yaml) on every scene file of DIR/had and DIR/pretrain, one domain per
scene in name order, seed 0: the benchmark's transductive Stages 1-2 (benchmarks/ours.py), so the release is the
encoder those figures were measured with. Checkpoints go to --workdir (the .pth files, resumable); the release
(safetensors + config.json, encoder/release.py) to --out. The sensor of each scene is the `sensor` entry of its
.npz. The model card (weights/MODEL_CARD.md) is not rewritten.
Prints each file's sha256 and size, and the seconds taken.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/build_release.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from data.scenes import scene_entries  # noqa: E402
from encoder.release import CONFIG_NAME, WEIGHT_FILES, write_release  # noqa: E402
from main_pretrain import run_pretraining  # noqa: E402
from utils.cli import run_cli, script_parser  # noqa: E402
from utils.errors import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("had", "pretrain")  # the shared scene folders the release is pre-trained on


def build_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__.split("\n")[0], "python scripts/build_release.py",
                           {"weights/tokenizer.safetensors, weights/encoder.safetensors": "the two stages' weights",
                            "weights/config.json": "architecture, preprocessing, domain table, sha256 of each file",
                            "runs/release/": "the Stage 1-2 checkpoints (.pth) the release is written from"})
    parser.add_argument("--data", default="../shared/data", help="folder holding had/ and pretrain/")
    parser.add_argument("--out", default="weights", help="release folder to write")
    parser.add_argument("--workdir", default="runs/release", help="Stage 1-2 checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def sensor(path: Path) -> str:
    """The `sensor` string a shared scene's .npz records."""
    with np.load(path, allow_pickle=False) as data:
        if "sensor" not in data.files:
            raise DataError(f"{path}: records no 'sensor' entry, which the release's domain table needs")
        return str(data["sensor"])


def build(data: Path, out: Path, workdir: Path, seed: int) -> dict:
    entries = sorted(scene_entries([str(data / group) for group in GROUPS]), key=lambda e: e["name"])
    entries = [{**entry, "domain_id": i} for i, entry in enumerate(entries)]
    flow = yaml.safe_dump(entries, default_flow_style=True, width=1 << 20).strip()
    tok_set = [f"seed={seed}", f"output_dir={workdir / 'tokenizer'}"]
    pre_set = [f"seed={seed}", f"output_dir={workdir / 'encoder'}", f"pretrain_datasets={flow}",
               f"num_domains={len(entries)}"]
    encoder_ckpt = run_pretraining(ROOT / "configs" / "pretrain.yaml", ROOT / "configs" / "tokenizer.yaml",
                                   pre_set, tok_set)
    sensors = {entry["name"]: sensor(Path(entry["data_path"])) for entry in entries}
    return write_release(encoder_ckpt, out, sensors)


def main(args: argparse.Namespace) -> None:
    os.chdir(ROOT)  # relative paths are the repository's, so config.json records the same scene paths on any machine
    start = time.perf_counter()
    out = Path(args.out)
    config = build(Path(args.data), out, Path(args.workdir), args.seed)
    for name in (*WEIGHT_FILES.values(), CONFIG_NAME):
        size = (out / name).stat().st_size
        digest = f", sha256 {config['sha256'][name]}" if name in config["sha256"] else ""
        print(f"{out / name}: {size / 2**20:.2f} MiB{digest}")
    print(f"release of {len(config['domains'])} domains written to {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    run_cli(main, build_parser())
