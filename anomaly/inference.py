"""Stage 3 inference (spec 6.3): score a scene and write its anomaly map, head maps, metrics and figure.

    python anomaly/inference.py --config configs/anomaly.yaml --data_path path/to/scene.npz [--out_dir D] [--overwrite]
    python anomaly/inference.py --detector_ckpt detector.pth --data_path path/to/scene.npz   # a detector of your choice
    python -m anomaly.inference ...                                    # the same

The detector defaults to the one train_anomaly.py wrote for the scene: `<output_dir>/anomaly_detector.pth`,
`checkpoints/anomaly/<scene name>/` when output_dir is left empty (anomaly/run_folders.py).

The model is rebuilt from the checkpoints: detector -> encoder -> tokenizer, each parent checked by sha256
(or from the copies a self-contained detector carries: anomaly/export_detector.py). The run keys come from the
YAML / command line (device, amp, data_path, cube_key, gt_key, gt_path, cube_layout, out_dir,
inference_batch_size). Where the run
config's model settings differ from the trained ones, what can change without retraining is applied and
logged (head weights of heads without trained weights, normalize_scores, extent_window, line_length, line_weight,
fused_smoothing, local_rx, lm_block, score_offsets, inference_stride, pfa, detection_threshold, domain_id), and what
cannot (LoRA, one-class shape, supervised, adapt_steps) is refused
with an error naming the key and the checkpoint (anomaly/settings.py).
The trained `domain_id` setting is resolved for the scene being scored (`auto`: the pre-training scene of
the same name, else the nearest mean prepared spectrum; anomaly/domain.py), logged and written to metrics.json.

Writes into `out_dir` (default outputs/<scene name>), all its files atomically and together (a failed
write replaces none of them), and refuses to replace an earlier run's files without --overwrite (docs/design.md "Outputs a user can look at");
the folder is locked against a second run and refused before scoring when it is unwritable. An earlier run's
files (and a missing scene or default detector) are found before torch is even imported (anomaly/cli_args.py):
- anomaly_map.npy   (H, W) float32, the fused map (the heads normalised per scene, log_z by default, fused and smoothed)
- head_maps.npz     each computed head's raw (H, W) map
- metrics.json      fused and per-head ROC AUC, AP, AUC(Pf,tau), AUC(Pd,tau) when the scene has a gt
                    (the gt is read for these metrics only), runtime, mode, checkpoints and hashes; every
                    path relative to the current directory when it lies under it, else absolute
- anomaly_map.png   false colour, gt, fused map (the detected objects outlined), each head's map, ROC curve
- detections.csv    the detected objects (anomaly/detections.py): the fused map above the (1 - pfa) quantile of
                    its valid pixels (or above detection_threshold), 8-connected: id, centroid row / col, lon / lat,
                    area in pixels and m2, max and mean score; metrics.json "detections" holds the threshold, the
                    count and, with a gt mask, how many gt objects were hit
- detections.geojson the objects' polygons in the scene's CRS (pixel coordinates without a georeference)
- anomaly_map.tif   a georeferenced scene's fused map as a cloud-optimised GeoTIFF (anomaly/georef.py; nodata NaN);
                    a lookup-table product (EMIT) gets it orthorectified, and anomaly_map_swath.tif on the swath grid
Pixels the scene marks as no data (`Scene.valid` False) are NaN in every map, and left out of the metrics and the
detection threshold.
A `.npy` scene stays memory-mapped: patches are read and preprocessed batch by batch.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python anomaly/inference.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anomaly.cli_args import check_inference, inference_parser as build_parser  # noqa: E402  (no torch)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed and pre-flight checked before torch loads
    ARGS = parse_cli(build_parser(), check=check_inference)

import numpy as np  # noqa: E402

from anomaly.checkpoint import ModelLoader, load_universal_model, read_detector, trained_config  # noqa: E402
from anomaly.config import AnomalyConfig, load_anomaly_config  # noqa: E402
from anomaly.detections import (CSV_NAME, GEOJSON_NAME, detection_summary, detections_csv,  # noqa: E402
                                detections_geojson, find_detections)
from anomaly.detector import HSIAnomalyDetector  # noqa: E402
from anomaly.domain import warn_if_unseen  # noqa: E402
from anomaly.scoring import SceneScores  # noqa: E402
from anomaly.georef import georeferenced_maps  # noqa: E402
from anomaly.run_folders import GEO_OUTPUT_FILES, default_detector, output_folder  # noqa: E402
from anomaly.settings import inference_settings, same_scene  # noqa: E402
from anomaly.visualize import render_anomaly_figure  # noqa: E402
from data.io import Scene, load_scene, scene_name  # noqa: E402
from data.product import check_valid  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.checkpoint import read_checkpoint  # noqa: E402
from utils.config import apply_overrides  # noqa: E402
from utils.errors import DataError  # noqa: E402
from utils.logging import get_logger  # noqa: E402
from utils.metrics import detection_metrics  # noqa: E402
from utils.paths import shown_path  # noqa: E402
from utils.run_lock import lock_output_dir, unlock_output_dir  # noqa: E402
from utils.runtime import autocast, resolve_device, set_seed  # noqa: E402

log = get_logger("anomaly")


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _metrics(maps: dict[str, np.ndarray], fused: np.ndarray, gt: np.ndarray | None,
             valid: np.ndarray | None = None) -> dict[str, Any]:
    """Detection metrics of the fused map and each head's against `gt`, over the pixels that hold data (`valid`)."""
    if gt is None:
        return {"note": "the scene has no gt mask: no detection metrics"}
    if valid is not None:  # (P,) vectors of the pixels with data: a no-data pixel is neither hit nor false alarm
        maps, fused, gt = {name: m[valid] for name, m in maps.items()}, fused[valid], gt[valid]
    positives = int(gt.sum())
    if positives == 0 or positives == gt.size:
        return {"note": f"the gt mask has {'no anomaly' if positives == 0 else 'no background'} pixels: "
                        f"AUC is undefined"}
    return {"fused": detection_metrics(fused, gt),
            "heads": {name: detection_metrics(m, gt) for name, m in maps.items()},
            "anomaly_pixels": positives}


def trained_run_config(read: tuple[dict[str, Any], dict[str, str]], overrides: list[str] | None = None,
                       **flags: str | None) -> AnomalyConfig:
    """A read detector checkpoint's (ckpt, record) trained config with `overrides`, then the flags
    (`data_path=...`) when given: the run config of an inference without a config file (validated with the model
    settings, once anomaly/settings.py has refused what needs retraining)."""
    ckpt, record = read
    extra = [f"{key}={value}" for key, value in flags.items() if value]
    return apply_overrides(trained_config(ckpt, record["path"]), list(overrides or []) + extra)


@dataclass
class ScoredScene:
    """What scoring a scene gives: the scene, its maps (anomaly/scoring.py; NaN at the scene's no-data pixels),
    the metrics.json content and the settings the detector scored with."""

    scene: Scene
    scores: SceneScores
    metrics: dict[str, Any]
    settings: AnomalyConfig | None = None


def score_with_detector(run: AnomalyConfig, detector_ckpt: str | Path, scene: Scene | None = None,
                        before_scoring: Callable[[], None] | None = None, overrides: list[str] | None = None,
                        config_path: str | Path | None = None,
                        read: tuple[dict[str, Any], dict[str, str]] | None = None,
                        load_models: ModelLoader = load_universal_model) -> ScoredScene:
    """Score `run.data_path` (or the already loaded `scene`) with the trained detector, writing nothing;
    `before_scoring` runs once the models, settings, preprocessing and domain are checked (run_inference locks its
    output folder there, so a refused setting leaves no folder behind). `read`: the detector file's (ckpt, record)
    when the caller has read it already; `load_models` reads its encoder (anomaly/checkpoint.read_detector).

    `run` gives the run keys (device, batch size, ...). The detector scores as trained, changed by what the
    `overrides` change and may change; where the config file `config_path` (that `run` was read from) differs,
    a warning says so (anomaly/settings.py). The scene is prepared and its domain chosen by the detector itself
    (`HSIAnomalyDetector.score_scene`, the spec's call, gives the same map). Used by `run_inference`, the
    benchmark and the speed case alike."""
    start = time.time()
    device = resolve_device(run.device)
    scene = scene if scene is not None else load_scene(run.data_path, run.cube_key, run.gt_key, run.gt_path,
                                                       run.cube_layout)
    chain = read_detector(detector_ckpt, device, read, load_models)
    settings = inference_settings(chain.trained, list(overrides or []), detector_ckpt,
                                  run if config_path is not None else None, config_path)
    detector = HSIAnomalyDetector.from_file(chain, settings=settings)
    mode = "supervised" if chain.supervised else "unsupervised"
    if chain.supervised:
        train_scene = load_scene(settings.supervised_data_path)
        if same_scene(train_scene, settings.supervised_data_path, scene, run.data_path):
            raise DataError(f"{detector_ckpt} was trained with the labels of {settings.supervised_data_path}, "
                            f"the scene being scored: its metrics would be meaningless (labels never score)")
    valid = check_valid(scene.valid, scene.cube.shape[:2], run.data_path)
    prep = detector.prepare(scene.cube, scene.wavelengths, run.data_path, valid)
    domain = detector.choose_domain(settings.domain_id, scene.cube, scene.name, prep, valid)
    log.info(f"{scene.name}: {domain.describe()}")
    warn_if_unseen(log, scene.name, chain.info["domains"], chain.ckpt["config"].get("train_scene"))
    log.info(f"scoring {scene.name} {scene.cube.shape} (-> {detector.num_bands} bands) with heads "
             f"{detector.head_weights}, {domain.describe()}, {mode}")
    if before_scoring is not None:
        before_scoring()
    with autocast(device, run.amp):
        scores = detector.score(scene.cube, prep, domain, run.inference_batch_size, valid)
    metrics = {
        "scene": scene.name, "data_path": shown_path(run.data_path), "shape": list(scene.cube.shape), "mode": mode,
        "gt_path": shown_path(run.gt_path) if run.gt_path else None, "cube_layout": run.cube_layout,
        "train_scene": chain.ckpt["config"].get("train_scene"), "domain_id": domain.domain_id,
        "domain": domain.as_dict(),
        "head_weights": detector.head_weights, "normalize_scores": settings.normalize_scores,
        "extent_window": settings.extent_window, "line_length": settings.line_length,
        "line_weight": settings.line_weight, "fused_smoothing": settings.fused_smoothing,
        "runtime_seconds": time.time() - start, "device": str(device), "inference_stride": detector.stride,
        "checkpoints": {name: {**record, "path": shown_path(record["path"])} for name, record in (
            ("detector", chain.record), ("encoder", chain.info["encoder"]), ("tokenizer", chain.info["tokenizer"]))},
        "preprocessing": scores.preprocessing,
        **_metrics(scores.head_maps, scores.anomaly_map, scene.gt, valid),
        "bad_bands": scene.bad_bands, "nodata_pixels": 0 if valid is None else int((~valid).sum()),
    }
    return ScoredScene(scene, scores, metrics, settings)


def _detections_line(summary: dict[str, Any]) -> str:
    rule = f"pfa {summary['pfa']:g}" if summary["pfa"] is not None else "detection_threshold"
    line = f"{summary['count']} objects ({summary['pixels']} pixels) above {summary['threshold']:.4g} ({rule})"
    if "gt_objects" in summary:
        line += f"; {summary['gt_objects_hit']} of {summary['gt_objects']} gt objects hit"
    return line


def run_inference(config_path: str | None, detector_ckpt: str | Path | None = None, data_path: str | None = None,
                  out_dir: str | None = None, overwrite: bool = False,
                  overrides: list[str] | None = None, load_models: ModelLoader = load_universal_model) -> Path:
    """Spec 6.3: score `data_path` with the trained detector and write the outputs; returns the folder.

    `detector_ckpt` defaults to `<output_dir>/anomaly_detector.pth` for the scene, where train_anomaly.py wrote it
    (output_dir "" = checkpoints/anomaly/<scene name>). Without `config_path` the run config is the detector's
    trained config with `overrides`. An earlier run's files in the output folder are refused before the scene
    or any model is loaded.
    """
    if config_path is None:  # no run config: score as trained, changed only by the overrides
        if detector_ckpt is None:
            defaults = load_anomaly_config(None, overrides, data_path=data_path)
            detector_ckpt = default_detector(defaults.output_dir, defaults.data_path)
        read = read_checkpoint(detector_ckpt, "anomaly")
        run = trained_run_config(read, overrides, data_path=data_path, out_dir=out_dir)
    else:
        run = load_anomaly_config(config_path, overrides, data_path=data_path, out_dir=out_dir)
        detector_ckpt = detector_ckpt or default_detector(run.output_dir, run.data_path)
        read = None
    folder = output_folder(run.out_dir, scene_name(run.data_path), overwrite)
    set_seed(run.seed)
    scene = load_scene(run.data_path, run.cube_key, run.gt_key, run.gt_path, run.cube_layout)
    scored = score_with_detector(run, detector_ckpt, scene, lambda: lock_output_dir(folder), overrides, config_path,
                                 read, load_models)
    metrics, result, settings = scored.metrics, scored.scores, scored.settings
    found = find_detections(result.anomaly_map, scene.geo, settings.pfa, settings.detection_threshold)
    gt = scene.gt if scene.gt is None or scene.valid is None else scene.gt * scene.valid  # no object under no data
    metrics["detections"] = detection_summary(found, gt)
    title = f"{scene.name}: fused {', '.join(result.head_maps)}"
    if "fused" in metrics:
        title += f" (AUC {metrics['fused']['auc']:.4f})"
    figure = render_anomaly_figure(scene.cube, scene.gt, result.anomaly_map, result.head_maps, title,
                                   wavelengths=scene.wavelengths, detections=found.mask)
    geotiffs = georeferenced_maps(result.anomaly_map, scene.geo, scene.name)
    write_files({folder / "anomaly_map.npy": _npy_bytes(result.anomaly_map),
                 folder / "head_maps.npz": _npz_bytes(result.head_maps),
                 folder / "metrics.json": json.dumps(metrics, indent=2) + "\n",
                 folder / "anomaly_map.png": figure,
                 **{folder / name: data for name, data in geotiffs.items()},
                 folder / CSV_NAME: detections_csv(found),
                 folder / GEOJSON_NAME: detections_geojson(found, scene.geo)})
    for name in set(GEO_OUTPUT_FILES) - set(geotiffs):  # an earlier run's GeoTIFF (--overwrite) is not this map
        if (folder / name).exists():
            os.unlink(folder / name)
    log.info(_detections_line(metrics["detections"]))
    if "note" in metrics:
        log.warning(f"{run.data_path}: {metrics['note']} (metrics.json says so)")
    if "fused" in metrics:
        heads = ", ".join(f"{k} {v['auc']:.4f}" for k, v in metrics["heads"].items())
        log.info(f"ROC AUC fused {metrics['fused']['auc']:.4f} ({heads})")
    unlock_output_dir(folder)
    log.info(f"wrote {folder}/ ({metrics['runtime_seconds']:.1f} s)")
    return folder


def main(args) -> None:
    run_inference(args.config, args.detector_ckpt, args.data_path, args.out_dir, args.overwrite, args.overrides)


if __name__ == "__main__":
    run_main(main, ARGS)
