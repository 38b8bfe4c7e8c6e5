"""Speed case: our inference against global RX on one scene, in one process, with a per-part breakdown.

    python benchmarks/speed_case.py --detector_ckpt checkpoints/anomaly/abu-urban-1/anomaly_detector.pth \
        --scene ../shared/data/had/abu-urban-1.npz [--repeats 3] [--set inference_stride=4] [--out speed.json]

Alternates `repeats` times: global RX on the raw cube (`anomaly.baselines.global_rx`, the benchmark's
baseline), then our inference as `anomaly/inference.py` runs it up to the files it writes (load the
scene and the checkpoint chain, fit the preprocessing, score every head, fuse). Reports the median seconds
of each, their ratio (ours / global RX: the issue's target is at most 10), and where our time goes: the
cumulative seconds of the scoring parts under cProfile in one further run (tokenizer, each head, the
preprocessing). Threads are whatever torch and BLAS take by default (OMP_NUM_THREADS and friends).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/speed_case.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from anomaly.baselines import global_rx  # noqa: E402
from anomaly.config import load_anomaly_config  # noqa: E402
from anomaly.inference import score_with_detector  # noqa: E402
from data.io import load_scene  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "anomaly.yaml"  # the run config, as inference.py reads it
# (label, function name in the profile): the parts of one inference, by where they live in the code
PARTS = [("load checkpoints", "read_detector"), ("fit preprocessing", "prepare"),
         ("context heads (blind-spot windows), all included", "blind_spot_maps"),
         ("- window tokens (stripes prepared; codes only with context_ids)", "windows"),
         ("- spectral codes", "spectral_codes"), ("- encoder passes", "masked_scores"),
         ("- core pixels painted into the maps", "_paint"), ("patch heads, tokenizer included", "patch_head_maps"),
         ("grx + lrx heads, cube preparation included", "rx_head_maps"), ("lrx windows", "local_rx_components")]


def infer(detector_ckpt: str, scene_path: str, overrides: list[str]) -> None:
    """Our inference up to its outputs (what metrics.json's runtime_seconds times)."""
    run = load_anomaly_config(CONFIG, overrides, data_path=scene_path)
    score_with_detector(run, detector_ckpt, overrides=overrides, config_path=CONFIG)


def profile_parts(detector_ckpt: str, scene_path: str, overrides: list[str]) -> dict[str, float]:
    profiler = cProfile.Profile()
    profiler.runcall(infer, detector_ckpt, scene_path, overrides)
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, primitive calls, tottime, cumtime, callers)}
    parts = {}
    for label, name in PARTS:
        # a function called from inside another timed call of itself would count twice: take the outermost
        cumulative = [value[3] for key, value in stats.items() if key[2] == name]
        parts[label] = max(cumulative, default=0.0)
    return parts


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    overrides = ["device=cpu", *args.overrides]
    cube = load_scene(args.scene).cube
    infer(args.detector_ckpt, args.scene, overrides)  # warm-up: imports, first-call allocations
    grx_times, ours_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        global_rx(cube)
        grx_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        infer(args.detector_ckpt, args.scene, overrides)
        ours_times.append(time.perf_counter() - start)
    grx, ours = statistics.median(grx_times), statistics.median(ours_times)
    result = {"scene": args.scene, "shape": list(cube.shape), "detector_ckpt": args.detector_ckpt,
              "overrides": overrides, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "global_rx_seconds": grx, "ours_seconds": ours, "ours_over_global_rx": ours / grx,
              "ours_parts_seconds": profile_parts(args.detector_ckpt, args.scene, overrides)}
    print(json.dumps(result, indent=1))
    if args.out:
        write_files({Path(args.out): json.dumps(result, indent=1)})
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detector_ckpt", required=True, help="Stage 3 checkpoint (anomaly/train_anomaly.py)")
    parser.add_argument("--scene", required=True, help="scene file to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override an anomaly config run key (e.g. inference_stride=4); repeatable")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


if __name__ == "__main__":
    run_cli(run, build_parser(), sys.argv[1:])
