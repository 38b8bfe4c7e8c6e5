"""Where Stage 3 writes: one folder per scene, so that a run on one scene never replaces another's.

    detector_dir("", "data/air1.mat")                     # checkpoints/anomaly/air1 (output_dir left empty)
    detector_dir("checkpoints/anomaly", "data/air1.mat")  # checkpoints/anomaly (given: used exactly)
    output_folder("", "air1", overwrite=False)            # outputs/air1, refused when it holds an earlier run

The scene name is `data.io.scene_name` (the file stem, or `synthetic[-SEED]`), found without reading the scene,
so the command lines check these folders before torch is imported. Imports neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path

from data.io import scene_name
from utils.errors import CheckpointError, ConfigError

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
