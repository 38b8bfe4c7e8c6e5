"""Where Stage 3 writes: one folder per scene, so that a run on one scene never replaces another's; and which
encoder it reads when the config names the default one (`encoder_or_release`).

    detector_dir("", "data/air1.mat")                     # checkpoints/anomaly/air1 (output_dir left empty)
    detector_dir("checkpoints/anomaly", "data/air1.mat")  # checkpoints/anomaly (given: used exactly)
    output_folder("", "air1", overwrite=False)            # outputs/air1, refused when it holds an earlier run

The scene name is `data.io.scene_name` (the file stem, or `synthetic[-SEED]`), found without reading the scene,
so the command lines check these folders before torch is imported. Imports neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path

from anomaly.config import AnomalyConfig
from data.io import scene_name
from encoder.release_files import RELEASE_DIR, release_folder
from utils.errors import CheckpointError, ConfigError
from utils.logging import get_logger

CKPT_NAME = "anomaly_detector.pth"
DETECTOR_ROOT = Path("checkpoints/anomaly")
OUTPUTS_ROOT = Path("outputs")
OUTPUT_FILES = ("anomaly_map.npy", "head_maps.npz", "metrics.json", "anomaly_map.png", "detections.csv",
                "detections.geojson")  # every run writes these
GEO_OUTPUT_FILES = ("anomaly_map.tif", "anomaly_map_swath.tif")  # a georeferenced scene's (anomaly/georef.py)


def detector_dir(output_dir: str, data_path: str) -> Path:
    """Stage 3's checkpoint folder: `output_dir` when given, else checkpoints/anomaly/<scene name of data_path>."""
    return Path(output_dir) if output_dir else DETECTOR_ROOT / scene_name(data_path)


def default_detector(output_dir: str, data_path: str) -> Path:
    """The detector that train_anomaly.py wrote for `data_path`'s scene with this `output_dir`; an error
    naming the scene and the command that trains it when there is none."""
    path = detector_dir(output_dir, data_path) / CKPT_NAME
    if not path.is_file():
        raise CheckpointError(f"no detector for scene '{scene_name(data_path)}' at {path}: train one with "
                              f"anomaly/train_anomaly.py --data_path {data_path}, or pass --detector_ckpt")
    return path


def output_folder(out_dir: str | None, scene: str, overwrite: bool) -> Path:
    """The inference output folder (`out_dir`, else outputs/<scene name>); refuses one that holds an
    earlier run's outputs unless `overwrite`."""
    folder = Path(out_dir or OUTPUTS_ROOT / scene)
    existing = [name for name in OUTPUT_FILES + GEO_OUTPUT_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{folder} already holds an earlier run's {', '.join(existing)}; pass --overwrite "
                          f"to replace them, or choose another --out_dir")
    return folder


def encoder_or_release(encoder_ckpt: str | Path) -> Path:
    """The encoder Stage 3 builds on: `encoder_ckpt`, or the released encoder (weights/) when `encoder_ckpt` is the
    config's default path and nothing is there (a fresh clone that has not pre-trained); the log says which."""
    path = Path(encoder_ckpt)
    if path.exists() or str(encoder_ckpt) != AnomalyConfig.encoder_ckpt:
        return path
    if release_folder(RELEASE_DIR) is None:
        raise CheckpointError(f"no encoder at {path} and no released encoder at {RELEASE_DIR}: pre-train one with "
                              f"main_pretrain.py, restore weights/ (git checkout weights/), or pass --encoder_ckpt")
    get_logger("anomaly").info(f"no encoder at {path}: using the released encoder {RELEASE_DIR} (pre-trained on the "
                               f"13 shared scenes; weights/MODEL_CARD.md)")
    return RELEASE_DIR
