"""The Stage 3 command lines (anomaly/train_anomaly.py, anomaly/inference.py, anomaly/export_detector.py,
main_anomaly.py): their parsers and pre-flight checks, importing neither torch nor transformers, so that
`--help`, a usage error or an output-folder clash answers before the scripts' heavy imports (utils/cli.py).
"""

from __future__ import annotations

import argparse

from anomaly.config import load_anomaly_config
from anomaly.run_folders import default_detector, output_folder
from data.io import require_scene_file, scene_name
from utils.cli import script_parser, stage_parser
from utils.errors import ConfigError

CONFIG = "configs/anomaly.yaml"
CONFIG_CLASS = "anomaly.config:AnomalyConfig"  # the dataclass whose keys --help lists
SCENE = "../shared/data/had/abu-urban-1.npz"
DETECTOR_WRITES = {"<output_dir>/anomaly_detector.pth": "the trained detector; output_dir \"\" (the default) = "
                                                        "checkpoints/anomaly/<scene name>, one folder per scene",
                   "<output_dir>/last.pth": "the latest epoch's state when something trains, for --resume"}
SCORING_WRITES = {"<out_dir>/anomaly_map.npy, head_maps.npz, metrics.json, anomaly_map.png":
                  "the fused map, each head's map, the metrics (ROC AUC when the scene has a gt mask) and the figure; "
                  "out_dir \"\" (the default) = outputs/<scene name>",
                  "<out_dir>/detections.csv, detections.geojson": "the objects above the pfa threshold: table and "
                                                                   "polygons",
                  "<out_dir>/anomaly_map.tif": "a georeferenced scene's map as a cloud-optimised GeoTIFF (EMIT: "
                                               "orthorectified, anomaly_map_swath.tif beside it)"}


def train_parser() -> argparse.ArgumentParser:
    parser = stage_parser("Stage 3: train the anomaly detector on a target scene", CONFIG,
                          f"python anomaly/train_anomaly.py --data_path {SCENE}", DETECTOR_WRITES, CONFIG_CLASS)
    parser.add_argument("--encoder_ckpt", default=None, help="Stage 2 checkpoint (default: the config's encoder_ckpt)")
    parser.add_argument("--data_path", default=None, help="target scene (default: the config's data_path)")
    parser.add_argument("--resume", action="store_true", help="continue from <output_dir>/last.pth")
    return parser


def inference_parser() -> argparse.ArgumentParser:
    parser = stage_parser("Stage 3: score a scene with a trained anomaly detector", CONFIG,
                          f"python anomaly/inference.py --data_path {SCENE}", SCORING_WRITES, CONFIG_CLASS)
    parser.add_argument("--detector_ckpt", default=None,
                        help="Stage 3 checkpoint (default: <output_dir>/anomaly_detector.pth for the scene, "
                             "checkpoints/anomaly/<scene name>/ with output_dir left empty)")
    parser.add_argument("--data_path", default=None, help="scene to score (default: the config's data_path)")
    parser.add_argument("--out_dir", default=None, help="output folder (default: the config's out_dir, "
                                                        "\"\" = outputs/<scene name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's files in out_dir")
    return parser


def check_inference(args: argparse.Namespace) -> None:
    """Before torch loads: the config reads, the scene file and (when defaulted) the scene's detector exist, and
    the output folder holds no earlier run's files (unless --overwrite). run_inference checks them again."""
    run = load_anomaly_config(args.config, args.overrides, data_path=args.data_path, out_dir=args.out_dir)
    require_scene_file(run.data_path)
    if args.detector_ckpt is None:
        default_detector(run.output_dir, run.data_path)
    output_folder(run.out_dir, scene_name(run.data_path), args.overwrite)


def export_parser(command: str = "python anomaly/export_detector.py") -> argparse.ArgumentParser:
    """anomaly/export_detector.py's parser, `sspq-hsi export detector`'s with that `command`."""
    parser = script_parser("Export a trained detector with its encoder and tokenizer inside",
                           f"{command} --detector_ckpt "
                           "checkpoints/anomaly/abu-urban-1/anomaly_detector.pth --out detector_portable.pth",
                           {"--out": "the detector checkpoint with its encoder and tokenizer checkpoints inside"})
    parser.add_argument("--detector_ckpt", required=True, help="Stage 3 checkpoint written by anomaly/train_anomaly.py")
    parser.add_argument("--out", required=True, help="the self-contained file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    return parser


def pipeline_parser() -> argparse.ArgumentParser:
    parser = stage_parser("Stage 3: train the anomaly detector on a scene and score it", CONFIG,
                          f"python main_anomaly.py --data_path {SCENE}", {**DETECTOR_WRITES, **SCORING_WRITES},
                          CONFIG_CLASS)
    parser.add_argument("--data_path", default=None, help="target scene (default: the config's data_path)")
    parser.add_argument("--encoder_ckpt", default=None, help="Stage 2 checkpoint (default: the config's encoder_ckpt)")
    parser.add_argument("--out_dir", default=None, help="inference output folder (default: the config's out_dir, "
                                                        "\"\" = outputs/<scene name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's output files")
    parser.add_argument("--resume", action="store_true", help="continue training from <output_dir>/last.pth")
    return parser


def pipeline_overrides(args: argparse.Namespace) -> list[str]:
    """main_anomaly.py's --set overrides, then its --data_path and --encoder_ckpt as overrides when given."""
    return list(args.overrides) + [f"{key}={value}" for key, value in
                                   (("data_path", args.data_path), ("encoder_ckpt", args.encoder_ckpt)) if value]


def check_pipeline(args: argparse.Namespace) -> None:
    """Before torch loads and before training replaces <output_dir>/anomaly_detector.pth: the config reads and is
    unsupervised, the scene file exists, and the output folder holds no earlier run's files (unless --overwrite)."""
    cfg = load_anomaly_config(args.config, pipeline_overrides(args))
    if cfg.supervised:
        raise ConfigError("main_anomaly.py trains and scores one scene, so it runs unsupervised only; for "
                          "supervised: true run anomaly/train_anomaly.py and anomaly/inference.py separately")
    require_scene_file(cfg.data_path)
    output_folder(args.out_dir or cfg.out_dir, scene_name(cfg.data_path), args.overwrite)
