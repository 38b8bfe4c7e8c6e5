"""One scene of `sspq-hsi detect`: Stage 3 training, then inference, into the scene's own folder.

    result = score_scene(SceneTask("a", "/data/a.npz", "/out/a", None, ("encoder_ckpt=/m/enc.pth",), False, False))
    result.status, result.seconds, result.roc_auc   # 'ok', 4.1, 0.987 (or 'failed' and result.error)

A task runs in whatever process an engine gives it (sspq_hsi/engines.py: this one, a local worker process, a
Dask worker), so it holds plain values and absolute paths only. It calls what main_anomaly.py calls
(train_anomaly_detector, then run_inference), with the encoder and tokenizer this process already loaded
(anomaly/model_cache.py: one load per worker process, not per scene). The folder gets main_anomaly.py's outputs,
the detector in `detector/`, and `batch.json`: written when the scene starts (status started) and, last, when
its outputs are all written (status done, seconds, ROC AUC). A done scene is skipped on a re-run; a started one
failed or was cut short, and is scored again. A failed scene comes back as a result with its error, never as an exception,
so it stops no other scene.
"""

from __future__ import annotations

import functools
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly.run_folders import output_folder
from utils.atomic import write_files
from utils.errors import SSPQError
from utils.logging import get_logger

MARKER = "batch.json"
DETECTOR_FOLDER = "detector"
log = get_logger("batch")


@dataclass(frozen=True)
class SceneTask:
    scene: str  # the scene's name (its file stem), the name of its folder
    data_path: str  # absolute: a worker's working folder may be another one
    folder: str  # absolute: <out_dir>/<scene>
    config: str | None  # absolute path of the Stage 3 YAML config; None = the built-in defaults
    overrides: tuple[str, ...]  # --set KEY=VALUE, then encoder_ckpt=... when given
    overwrite: bool  # also replace files in the folder that no `sspq-hsi detect` run wrote
    debug: bool  # log the traceback of every failure, not only of unexpected ones


@dataclass(frozen=True)
class SceneResult:
    scene: str
    status: str  # ok (scored now), skipped (done by an earlier run), failed, pending (not finished yet)
    seconds: float | None  # the scene's wall time, training and inference (skipped: the earlier run's)
    roc_auc: float | None  # the fused map's, when the scene has a gt mask
    folder: str
    error: str = ""  # one line, when failed


def failed(task: SceneTask, error: str, seconds: float | None = None) -> SceneResult:
    return SceneResult(task.scene, "failed", seconds, None, task.folder, " ".join(error.split()))


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's batch.json, or None when there is none (or it cannot be read: the scene is scored again)."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def finished(task: SceneTask) -> SceneResult | None:
    """The earlier run's result when the task's folder holds this scene finished from the same file with the same
    settings; a failed row when it holds another file's or other settings' (never silently skipped); else None."""
    marker = read_marker(Path(task.folder))
    if marker is None or marker.get("status") != "done":
        return None
    if (marker.get("data_path"), marker.get("overrides")) != (task.data_path, list(task.overrides)):
        return failed(task, f"{task.folder} holds this scene name scored from {marker.get('data_path')} with "
                            f"--set {marker.get('overrides')}, not from {task.data_path} with --set "
                            f"{list(task.overrides)}; pass --overwrite to score it again, or choose another --out_dir")
    return SceneResult(task.scene, "skipped", marker.get("seconds"), marker.get("roc_auc"), task.folder)


@functools.cache
def _models():
    """This process's ModelCache, made on its first scene (it imports torch)."""
    from anomaly.model_cache import ModelCache

    return ModelCache()


def _marker(task: SceneTask, status: str, **extra: Any) -> str:
    return json.dumps({"status": status, "scene": task.scene, "data_path": task.data_path,
                       "overrides": list(task.overrides), **extra}, indent=2) + "\n"


def _score(task: SceneTask) -> tuple[float, float | None]:
    """Train and score the scene into its folder; returns (seconds, ROC AUC or None)."""
    # imported here, in the worker: the command line plans the run and reads the markers without torch
    from anomaly.inference import run_inference
    from anomaly.train_anomaly import train_anomaly_detector

    tic = time.perf_counter()
    folder = Path(task.folder)
    ours = read_marker(folder) is not None  # an earlier detect run of this scene, cut short or --overwrite
    output_folder(task.folder, task.scene, task.overwrite or ours)  # another run's files: refused, named
    write_files({folder / MARKER: _marker(task, "started")})
    overrides = [*task.overrides, f"output_dir={folder / DETECTOR_FOLDER}"]
    load = _models().load
    ckpt = train_anomaly_detector(task.config, overrides, data_path=task.data_path, load_models=load)
    run_inference(task.config, ckpt, task.data_path, task.folder, overwrite=True, overrides=overrides,
                  load_models=load)
    metrics = json.loads((folder / "metrics.json").read_text())
    auc = metrics["fused"]["auc"] if "fused" in metrics else None
    seconds = time.perf_counter() - tic
    write_files({folder / MARKER: _marker(task, "done", seconds=seconds, roc_auc=auc)})  # last: the scene is done
    return seconds, auc


def score_scene(task: SceneTask) -> SceneResult:
    """Score one scene (module doc). Any exception becomes a failed result, its traceback logged when it is not one
    of the project's errors (a bug) or under --debug; Ctrl-C still stops the run."""
    tic = time.perf_counter()
    try:
        seconds, auc = _score(task)
    except Exception as err:  # noqa: BLE001 - one scene's failure, whatever it is, must not stop the others
        known = isinstance(err, SSPQError)
        error = str(err) if known else f"{type(err).__name__}: {err}"
        if task.debug or not known:  # the command's log line names the error; a bug needs its traceback too
            log.error(f"{task.scene}: {error}\n{traceback.format_exc().rstrip()}")
        return failed(task, error, time.perf_counter() - tic)
    return SceneResult(task.scene, "ok", seconds, auc, task.folder)
