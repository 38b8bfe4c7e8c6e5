"""Batch case: the seconds per scene of `sspq-hsi detect` with 1 and 2 local workers and on a 2-worker Dask
LocalCluster, against the shell loop it replaces (`python main_anomaly.py` once per scene).

    python benchmarks/batch_case.py --scenes ../shared/data/had \
        --encoder_ckpt checkpoints/encoder/universal_hsi_encoder.pth [--modes loop,1,2,cluster] [--out batch.json]

Every mode runs the real command lines in fresh processes, each into a folder of its own under a temporary
directory, so that imports, worker start-up and model loading are counted: seconds per scene = the wall time of
the run (every command of the loop together) / the scenes. Also reported per mode: the mean of the scenes' own
seconds (summary.csv, or metrics.json for the loop: training and scoring inside the worker) and the mean ROC AUC
(the same maps in every mode). The cluster's start-up is timed apart: a cluster is started once for many runs.
Threads: a local worker takes cores / workers torch threads, the cluster's workers cores / 2 (OMP_NUM_THREADS
caps both, and the one-worker run and the loop take what torch takes); the load average at the start of each
mode is recorded, since a busy machine slows every mode.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/batch_case.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli_args import BATCH_MODES, batch_parser  # noqa: E402
from data.scenes import scene_files  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError, SSPQError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """A command of the case; a failed one stops the case with the tail of its log (a failed scene does not)."""
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if run.returncode not in (0, 1):  # 1: sspq-hsi detect with a failed scene, which the summary reports
        raise SSPQError(f"{' '.join(cmd[:4])} ... exited {run.returncode}:\n{run.stderr[-2000:]}")
    return run


def loop(paths: list[Path], encoder: str, out: Path, sets: list[str]) -> list[dict[str, Any]]:
    """The shell loop: main_anomaly.py once per scene; the rows as summary.csv would hold them."""
    rows = []
    for path in paths:
        folder = out / path.stem
        _run([sys.executable, "main_anomaly.py", "--data_path", str(path), "--encoder_ckpt", encoder,
              "--out_dir", str(folder), "--set", f"output_dir={folder / 'detector'}", *sets])
        metrics = json.loads((folder / "metrics.json").read_text())
        rows.append({"scene": path.stem, "status": "ok", "seconds": None,
                     "roc_auc": metrics["fused"]["auc"] if "fused" in metrics else None})
    return rows


def detect(scenes: str, encoder: str, out: Path, sets: list[str], where: list[str]) -> list[dict[str, Any]]:
    _run([sys.executable, "-m", "sspq_hsi", "detect", scenes, "--encoder_ckpt", encoder, "--out_dir", str(out),
          *where, *sets])
    with open(out / "summary.csv", newline="") as handle:
        return [{"scene": row["scene"], "status": row["status"], "seconds": float(row["seconds"] or "nan"),
                 "roc_auc": float(row["roc_auc"]) if row["roc_auc"] else None} for row in csv.DictReader(handle)]


def on_cluster(scenes: str, encoder: str, out: Path, sets: list[str]) -> tuple[list[dict[str, Any]], float]:
    """detect --cluster on a LocalCluster of 2 single-thread worker processes, configured as docs/usage.md advises a
    cluster's workers; (rows, the cluster's start-up)."""
    import dask
    from distributed import LocalCluster

    tic = time.perf_counter()
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 2)))
    # Dask's default MALLOC_TRIM_THRESHOLD_ (65536) switches off glibc's adaptive mmap threshold: Stage 3 ran 1.7x
    # slower under it on the shared scenes
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                         env={"OMP_NUM_THREADS": threads}) as cluster:
        startup = time.perf_counter() - tic
        return detect(scenes, encoder, out, sets, ["--cluster", cluster.scheduler_address]), startup


def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(BATCH_MODES))
    if unknown:
        raise ConfigError(f"--modes: unknown {', '.join(unknown)}; the modes are {', '.join(BATCH_MODES)}")
    paths = scene_files([args.scenes], option="--scenes")
    encoder = str(Path(args.encoder_ckpt).resolve())
    sets = [x for s in ["device=cpu", *args.overrides] for x in ("--set", s)]
    result: dict[str, Any] = {
        "scenes": args.scenes, "count": len(paths), "encoder_ckpt": args.encoder_ckpt, "overrides": args.overrides,
        "conditions": {"cpu_count": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                       "python": platform.python_version(), "machine": platform.machine()},
        "modes": {}}
    with tempfile.TemporaryDirectory(prefix="sspq-batch-case-") as tmp:
        for mode in modes:
            out, load = Path(tmp) / mode, os.getloadavg()[0]
            tic = time.perf_counter()
            extra: dict[str, Any] = {}
            if mode == "loop":
                rows = loop(paths, encoder, out, sets)
            elif mode == "cluster":
                rows, extra["cluster_startup_seconds"] = on_cluster(args.scenes, encoder, out, sets)
            else:
                rows = detect(args.scenes, encoder, out, sets, ["--workers", mode])
            wall = time.perf_counter() - tic - extra.get("cluster_startup_seconds", 0.0)
            ok = [row for row in rows if row["status"] == "ok"]
            aucs = [row["roc_auc"] for row in ok if row["roc_auc"] is not None]
            result["modes"][mode] = {
                "wall_seconds": wall, "seconds_per_scene": wall / len(paths), "scenes_ok": len(ok),
                "mean_scene_seconds": statistics.mean(r["seconds"] for r in ok) if ok and mode != "loop" else None,
                "mean_roc_auc": statistics.mean(aucs) if aucs else None, "load_average_at_start": load, **extra}
            print(f"{mode:>8}: {wall / len(paths):6.2f} s per scene ({wall:.1f} s for {len(paths)}, {len(ok)} ok), "
                  f"load {load:.2f}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    if args.out:
        write_files({Path(args.out): json.dumps(result, indent=1) + "\n"})
    return result


if __name__ == "__main__":
    run_cli(run, batch_parser(), sys.argv[1:])
