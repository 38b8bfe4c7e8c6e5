"""Stage 3 from one command: train the anomaly detector on a scene, then score that scene.

    python main_anomaly.py --config configs/anomaly.yaml --data_path path/to/scene.npz   # train + infer
    python main_anomaly.py                          # the embedded synthetic scene, with the encoder
                                                    # that main_pretrain.py wrote
    python main_anomaly.py ... --resume             # training continues from <output_dir>/last.pth

Runs anomaly/train_anomaly.py (writes <output_dir>/anomaly_detector.pth) and anomaly/inference.py
(writes anomaly_map.npy, head_maps.npz, metrics.json, anomaly_map.png into --out_dir, default
outputs/<scene name>; --overwrite replaces an earlier run's files). A scene of any band count works:
it is resampled to the tokenizer's num_bands (DESIGN 3). The run ends with a summary: seconds per stage,
the files written, the domain the scene was scored under, and the ROC AUC per head when it has a gt mask.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python main_anomaly.py` from elsewhere: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from anomaly.config import load_anomaly_config  # noqa: E402
from anomaly.domain import DomainChoice  # noqa: E402
from anomaly.inference import output_folder, run_inference  # noqa: E402
from anomaly.train_anomaly import train_anomaly_detector  # noqa: E402
from data.io import load_scene  # noqa: E402
from utils.cli import run_cli, stage_parser  # noqa: E402
from utils.errors import ConfigError  # noqa: E402
from utils.summary import RunSummary  # noqa: E402


def scoring_notes(folder: Path, metrics: dict[str, Any]) -> list[str]:
    """An inference run's metrics.json as summary lines: ROC AUC per head (or why there is none), the
    domain the scene was scored under, the figure and the metrics file."""
    if "fused" in metrics:
        heads = ", ".join(f"{name} {m['auc']:.4f}" for name, m in metrics["heads"].items())
        auc = f"ROC AUC fused {metrics['fused']['auc']:.4f} ({heads})"
    else:
        auc = f"no ROC AUC: {metrics['note']}"
    return [auc, f"scored under {DomainChoice(**metrics['domain']).describe()}",
            f"figure {folder / 'anomaly_map.png'}, metrics {folder / 'metrics.json'}"]


def main(args) -> None:
    overrides = list(args.overrides) + [f"{key}={value}" for key, value in
                                        (("data_path", args.data_path), ("encoder_ckpt", args.encoder_ckpt)) if value]
    cfg = load_anomaly_config(args.config, overrides)
    if cfg.supervised:
        raise ConfigError("main_anomaly.py trains and scores one scene, so it runs unsupervised only; for "
                          "supervised: true run anomaly/train_anomaly.py and anomaly/inference.py separately")
    scene_name = load_scene(cfg.data_path, cfg.cube_key, cfg.gt_key, cfg.gt_path, cfg.cube_layout).name
    # checked before training replaces <output_dir>/anomaly_detector.pth
    output_folder(args.out_dir or cfg.out_dir, scene_name, args.overwrite)
    summary = RunSummary()
    ckpt = summary.run("Stage 3 training", train_anomaly_detector, args.config, overrides, resume=args.resume)
    folder = summary.run("inference", run_inference, args.config, ckpt, out_dir=args.out_dir,
                         overwrite=args.overwrite, overrides=overrides)
    for line in scoring_notes(folder, json.loads((folder / "metrics.json").read_text())):
        summary.note(line)
    summary.log()


def build_parser():
    parser = stage_parser("Stage 3: train the anomaly detector on a scene and score it", "configs/anomaly.yaml")
    parser.add_argument("--data_path", default=None, help="target scene (default: the config's data_path)")
    parser.add_argument("--encoder_ckpt", default=None, help="Stage 2 checkpoint (default: the config's)")
    parser.add_argument("--out_dir", default=None, help="inference output folder (default outputs/<scene name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's output files")
    parser.add_argument("--resume", action="store_true", help="continue training from {output_dir}/last.pth")
    return parser


if __name__ == "__main__":
    run_cli(main, build_parser())
