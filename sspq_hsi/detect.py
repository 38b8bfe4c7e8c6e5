"""`sspq-hsi detect`: Stage 3 on many scenes, each trained and scored as main_anomaly.py does one.

    sspq-hsi detect scene.hdr                                     # one scene -> outputs/scene/
    sspq-hsi detect flights/ 'more/*.nc' @campaign.txt --workers 2 --out_dir results/campaign
    sspq-hsi detect flights/ --cluster tcp://scheduler:8786       # on the workers of a Dask scheduler

The scenes are named as for `--scenes` (data/scenes.py: folders, globs, files, @LIST); one scene is one task
(sspq_hsi/scene_task.py), run here, on local worker processes or on a Dask cluster (sspq_hsi/engines.py).
Scenes whose folder says they are done are skipped; the table `<out_dir>/summary.csv` (sspq_hsi/summary.py) is
rewritten after every scene. The command line is read, the config checked and the scenes listed before torch
loads, so a bad option or scene list is refused at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from anomaly.cli_args import CONFIG_CLASS
from anomaly.config import load_anomaly_config
from anomaly.run_folders import encoder_or_release
from data.scenes import scene_files
from sspq_hsi.engines import dask_cluster, in_process, local_pool
from sspq_hsi.scene_task import DETECTOR_FOLDER, MARKER, SceneResult, SceneTask, finished
from sspq_hsi.summary import BatchSummary
from utils.cli import parse_cli, run_main, stage_parser
from utils.errors import ConfigError
from utils.logging import get_logger
from utils.paths import shown_path
from utils.run_lock import lock_output_dir, unlock_output_dir

SUMMARY_NAME = "summary.csv"
PER_SCENE_KEYS = ("data_path", "gt_path", "out_dir", "output_dir")  # set by detect for each scene
DESCRIPTION = """\
Score scenes: train each scene's Stage 3 detector and score the scene with it, as main_anomaly.py does for one.
One scene is one task; each worker process loads the encoder and tokenizer once; a failed scene is reported and
stops no other; a scene an earlier run finished is skipped (--overwrite scores it again).

exit status: 0 every scene is scored (now or by an earlier run); 1 one or more scenes failed (the others are
scored, summary.csv gives each error); 2 refused before any scene ran (an option, the config or the scene list);
130 interrupted (run the same command again to score the rest)."""
WRITES = {
    "<out_dir>/<scene>/anomaly_map.npy, head_maps.npz, metrics.json, anomaly_map.png, detections.csv, "
    "detections.geojson": "main_anomaly.py's outputs for the scene (and anomaly_map.tif for a georeferenced one)",
    f"<out_dir>/<scene>/{DETECTOR_FOLDER}/anomaly_detector.pth": "the scene's trained detector",
    f"<out_dir>/<scene>/{MARKER}": "status started when the scene starts, done (with its seconds and ROC AUC) "
                                   "once every output is written: a re-run skips the done scenes, redoes the others",
    f"<out_dir>/{SUMMARY_NAME}": "one row per scene: scene, status (ok, skipped, failed, pending), seconds, "
                                 "roc_auc (when the scene has a gt mask), out_dir, error; rewritten after every scene",
}
log = get_logger("batch")


def detect_parser(prog: str = "sspq-hsi detect") -> argparse.ArgumentParser:
    parser = stage_parser(DESCRIPTION, None, f"{prog} ../shared/data/had --workers 2 --out_dir outputs/had", WRITES,
                          CONFIG_CLASS)
    parser.prog = prog
    parser.add_argument("scenes", nargs="+", metavar="DIR|GLOB|FILE|@LIST",
                        help="the scenes to score: folders (their scene files), glob patterns, scene files, or "
                             "@LIST, a text file naming those one per line; each scene's name is its file stem")
    parser.add_argument("--encoder_ckpt", default=None, help="Stage 2 checkpoint (default: the config's encoder_ckpt)")
    parser.add_argument("--out_dir", default="outputs", help="each scene's outputs go to OUT_DIR/<scene>/, the "
                                                             "summary to OUT_DIR/summary.csv")
    parser.add_argument("--overwrite", action="store_true",
                        help="score again the scenes an earlier run finished, and replace the files of runs other "
                             "than sspq-hsi detect's in the scenes' folders")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, metavar="N",
                       help="scenes scored at once by worker processes on this machine, the cores shared among them")
    where.add_argument("--cluster", default=None, metavar="ADDRESS",
                       help="score on the workers of the Dask scheduler at ADDRESS (tcp://host:8786): pip install "
                            "-e '.[cluster]' (a clone of this repository) here and on the workers, which must see the scenes and OUT_DIR at "
                            "the same paths")
    return parser


def _here(path: str) -> str:
    """`path` made absolute when it exists here, for workers whose working folder may be another; else as given (a
    missing file is then named by the worker's error)."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def plan(args: argparse.Namespace) -> tuple[list[SceneTask], list[SceneResult]]:
    """The tasks of the scenes still to score, and a row for every scene named (pending, or skipped when an earlier
    run finished it); ConfigError on a bad config, option or scene list."""
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    clash = sorted({o.split("=", 1)[0].strip() for o in args.overrides} & set(PER_SCENE_KEYS))
    if clash:
        raise ConfigError(f"--set {', '.join(clash)}: detect sets these for each scene; name the scenes as arguments "
                          f"and their output folder with --out_dir")
    cfg = load_anomaly_config(args.config, args.overrides, encoder_ckpt=args.encoder_ckpt)
    if cfg.supervised:
        raise ConfigError("detect trains and scores each scene on itself, so it runs unsupervised only; for "
                          "supervised: true run anomaly/train_anomaly.py and anomaly/inference.py")
    out = Path(args.out_dir).resolve()
    # the release fallback decided here, once: workers whose working folder is another get the same encoder
    overrides = (*args.overrides, f"encoder_ckpt={_here(str(encoder_or_release(cfg.encoder_ckpt)))}")
    config = str(Path(args.config).resolve()) if args.config else None
    tasks, rows = [], []
    for path in scene_files(args.scenes, option="detect"):
        task = SceneTask(path.stem, str(path.resolve()), str(out / path.stem), config, overrides, args.overwrite,
                         args.debug)
        done = None if args.overwrite else finished(task)
        if done is None:
            tasks.append(task)
        rows.append(done or SceneResult(task.scene, "pending", None, None, task.folder))
    return tasks, rows


def _result_line(result: SceneResult) -> str:
    if result.status != "ok":
        return f"{result.scene}: failed: {result.error}"
    auc = "" if result.roc_auc is None else f", ROC AUC {result.roc_auc:.4f}"
    return f"{result.scene}: ok in {result.seconds:.1f} s{auc}"


def run_detect(args: argparse.Namespace) -> int:
    """Score the scenes (module doc); returns the exit status: 0, or 1 when a scene failed."""
    tasks, rows = plan(args)
    out = Path(args.out_dir)
    lock_output_dir(out)  # one detect run per output folder: two would write one summary.csv
    summary = BatchSummary(out / SUMMARY_NAME, rows)
    if args.cluster and tasks:
        results, where = dask_cluster(tasks, args.cluster), f"the Dask cluster at {args.cluster}"
    elif args.workers > 1 and len(tasks) > 1:
        workers = min(args.workers, len(tasks))
        results, where = local_pool(tasks, workers), f"{workers} worker processes"
    else:
        results, where = in_process(tasks), "this process"
    log.info(f"{len(rows)} scene(s): {len(rows) - len(tasks)} done by an earlier run (skipped), {len(tasks)} to score "
             f"in {where}; table {shown_path(summary.path)}")
    tic, count = time.perf_counter(), 0
    try:
        for count, result in enumerate(results, 1):
            summary.record(result)
            (log.info if result.status == "ok" else log.warning)(f"{count}/{len(tasks)} {_result_line(result)}")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted after {count} of {len(tasks)} scene(s) ({shown_path(summary.path)}); "
                                f"run the same command again to score the rest: finished scenes are skipped") from None
    wall = time.perf_counter() - tic
    counts = summary.counts()
    per_scene = f" ({wall / len(tasks):.1f} s per scene)" if tasks else ""
    log.info(f"{counts['ok']} scored, {counts['skipped']} skipped, {counts['failed']} failed in {wall:.1f} s"
             f"{per_scene}; {shown_path(summary.path)}")
    unlock_output_dir(out)
    if counts["failed"]:
        names = [row.scene for row in summary.rows.values() if row.status == "failed"]
        print(f"error: {len(names)} of {len(rows)} scene(s) failed ({', '.join(names[:5])}"
              f"{', ...' if len(names) > 5 else ''}): their errors are in {shown_path(summary.path)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str], prog: str) -> int:
    return run_main(run_detect, parse_cli(detect_parser(prog), argv))
