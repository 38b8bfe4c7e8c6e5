"""Stage 3 from one command: train the anomaly detector on a scene, then score that scene.

    python main_anomaly.py --config configs/anomaly.yaml --data_path path/to/scene.npz   # train + infer
    python main_anomaly.py                          # the embedded synthetic scene, with the encoder
                                                    # that main_pretrain.py wrote
    python main_anomaly.py ... --resume             # training continues from <output_dir>/last.pth

Runs anomaly/train_anomaly.py (writes <output_dir>/anomaly_detector.pth; output_dir "" = the default =
checkpoints/anomaly/<scene name>) and anomaly/inference.py with that detector (writes anomaly_map.npy,
head_maps.npz, metrics.json, anomaly_map.png, detections.csv, detections.geojson and, for a georeferenced scene,
anomaly_map.tif into --out_dir, default outputs/<scene name>; --overwrite
replaces an earlier run's files). An earlier run's files there, a missing scene file or a supervised config
are refused before torch is imported (anomaly/cli_args.py), so before training replaces any detector. A scene of any band count works:
it is resampled to the tokenizer's num_bands (docs/design.md "Band resampling"). The run ends with a summary: seconds per stage,
the files written, the domain the scene was scored under, and the ROC AUC per head when it has a gt mask.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python main_anomaly.py` from elsewhere: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from anomaly.cli_args import check_pipeline, pipeline_overrides, pipeline_parser as build_parser  # noqa: E402
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed and pre-flight checked before torch loads
    ARGS = parse_cli(build_parser(), check=check_pipeline)

from anomaly.domain import DomainChoice  # noqa: E402
from anomaly.inference import run_inference  # noqa: E402
from anomaly.train_anomaly import train_anomaly_detector  # noqa: E402
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
    check_pipeline(args)  # the command line ran it before torch loaded; again here for callers of main()
    overrides = pipeline_overrides(args)
    summary = RunSummary()
    ckpt = summary.run("Stage 3 training", train_anomaly_detector, args.config, overrides, resume=args.resume)
    folder = summary.run("inference", run_inference, args.config, ckpt, out_dir=args.out_dir,
                         overwrite=args.overwrite, overrides=overrides)
    for line in scoring_notes(folder, json.loads((folder / "metrics.json").read_text())):
        summary.note(line)
    summary.log()


if __name__ == "__main__":
    run_main(main, ARGS)
