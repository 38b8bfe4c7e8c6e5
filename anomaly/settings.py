"""Which settings a trained detector scores with: its trained config, changed once by the run's `--set` keys that
need no retraining.

    settings = inference_settings(trained, ["fused_smoothing=0"], "det.pth")   # AnomalyConfig

The trained config defines the model. A `--set` of what can change without retraining (CHANGEABLE, the fusion
weight of a head that needs no trained weights, the domain unless the scene's row was adapted) is applied and
logged; one of what cannot (FIXED) is refused, naming the key and the checkpoint. Where the run's config file
differs from the trained settings, the trained ones are used and one WARNING lists the differences with the
`--set` that would apply them. Keys that only steer training or the run (epochs, learning rates, folders,
device, ...) are not compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.config import AnomalyConfig
from data.io import Scene
from data.preprocess import iter_row_chunks
from utils.config import apply_overrides, to_dict
from utils.errors import ConfigError
from utils.logging import get_logger

CHANGEABLE = ("normalize_scores", "extent_window", "line_length", "line_weight", "fused_smoothing", "lm_block",
              "score_offsets", "score_layout", "refine_share", "context_ids", "inference_stride", "local_rx.inner", "local_rx.outer", "local_rx.n_components",
              "rx_components", "pfa", "detection_threshold")
FIXED = ("freeze_encoder", "use_lora", "lora.r", "lora.alpha", "lora.target_modules", "one_class.per_token",
         "one_class.rep_dim", "one_class.center_eps", "supervised", "adapt_steps")
log = get_logger("anomaly")


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"local_rx.inner": 7, ...}: a nested config dict flattened to dotted keys."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _model_key(key: str) -> bool:
    """True for the settings an inference run compares with the trained ones (module docstring)."""
    return key in CHANGEABLE or key in FIXED or key.startswith("head_weights.") or key == "domain_id"


def _refused(key: str, old: Any, new: Any, trained: AnomalyConfig) -> bool:
    if key in FIXED:
        return True
    if key == "head_weights.one_class" and old == 0 and new > 0:
        return True  # its weights were never trained
    return key == "domain_id" and trained.adapt_steps > 0  # the trained domain row was fitted to the training scene


def inference_settings(trained: AnomalyConfig, overrides: list[str], ckpt_path: str | Path,
                       run_file: AnomalyConfig | None = None, file_name: str | Path | None = None) -> AnomalyConfig:
    """The config a detector scores with: `trained` with the `overrides` (`key=value`) applied once.

    An override that needs retraining is a ConfigError naming the key, both values and the checkpoint. Model
    settings of the run's config file (`run_file`, read from `file_name`) that differ from the trained ones and
    are not overridden are not applied (the file is usually the training config, edited since) but logged in one
    WARNING, with the `--set` that would apply them."""
    old = _flat(to_dict(trained))
    effective = apply_overrides(trained, list(overrides))
    changed = {key: value for key, value in _flat(to_dict(effective)).items()
               if _model_key(key) and old[key] != value}
    for key, value in changed.items():
        if _refused(key, old[key], value, trained):
            raise ConfigError(f"--set {key}={value}: {ckpt_path} was trained with {key} = {old[key]!r}, and this "
                              f"cannot change without retraining: re-run anomaly/train_anomaly.py with it")
        log.info(f"{key}: {old[key]!r} at training -> {value!r} for this run (--set)")
    effective.validate()
    if run_file is not None:
        overridden = {item.split("=", 1)[0].strip() for item in overrides}
        differ = {key: value for key, value in _flat(to_dict(run_file)).items()
                  if _model_key(key) and old[key] != value and key not in changed
                  and not any(key == o or key.startswith(o + ".") for o in overridden)}
        if differ:
            listed = ", ".join(f"{key} {old[key]!r} (file: {value!r})" for key, value in differ.items())
            sets = " ".join(f"--set {key}={json.dumps(value)}" for key, value in differ.items())
            log.warning(f"{file_name}: the detector scores with its trained settings {listed}; to score with the "
                        f"file's instead pass {sets}")
    return effective


def same_scene(a: Scene, path_a: str, b: Scene, path_b: str) -> bool:
    """True when two scenes are the same file or hold the same cube: labels of the scored scene never train it."""
    if path_a == path_b:
        return True
    pa, pb = Path(path_a), Path(path_b)
    if pa.is_file() and pb.is_file() and pa.resolve() == pb.resolve():
        return True
    if a.cube.shape != b.cube.shape:
        return False
    return all(np.array_equal(x, y) for (_, x), (_, y) in zip(iter_row_chunks(a.cube), iter_row_chunks(b.cube)))
