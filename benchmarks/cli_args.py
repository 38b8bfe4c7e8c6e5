"""The benchmark command lines (benchmarks/run_benchmark.py, merge_results.py, scale_case.py, batch_case.py): their parsers,
importing neither torch nor transformers, so that `--help` and usage errors answer before the scripts' heavy
imports (utils/cli.py). benchmarks/speed_case.py keeps its own parser."""

from __future__ import annotations

import argparse

from utils.cli import script_parser

MODES = ("transductive", "leave-one-out", "cross-scene")
BENCHMARK_WRITES = {"OUT/benchmark.json": "one row per scene x method x seed, the protocol and the speed figures",
                    "OUT/benchmark.md": "mean ROC AUC (+- std over seeds) per scene and method",
                    "OUT/figures/<scene>.png": "each method's map and ROC curves",
                    "OUT/work/": "ours' checkpoints: Stages 1-2 per training-scene set and seed (reused by later "
                                 "runs), Stage 3 per scene"}


def benchmark_parser() -> argparse.ArgumentParser:
    parser = script_parser("Benchmark: our detector against classical baselines on every labelled scene of a folder",
                           "python benchmarks/run_benchmark.py --scenes ../shared/data/had --out results/",
                           BENCHMARK_WRITES, (("--set", "anomaly.config:AnomalyConfig"),))
    parser.add_argument("--scenes", required=True, help="folder of labelled anomaly scenes (.npz with cube, gt)")
    parser.add_argument("--pretrain", default=None, help="folder of extra unlabelled scenes for pre-training")
    parser.add_argument("--out", default="results", help="output folder")
    parser.add_argument("--mode", default="transductive", choices=MODES, help="pre-training protocol for ours")
    parser.add_argument("--folds", type=int, default=2, help="folds of --mode cross-scene")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a Stage 3 config key for ours (repeatable; Stages 1-2 are not affected)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per seeded method (mean and std)")
    parser.add_argument("--first_seed", type=int, default=0, help="seeds run are first_seed .. first_seed+seeds-1 "
                        "(runs of other seeds merge with benchmarks/merge_results.py)")
    parser.add_argument("--methods", default="ours,grx,lrx,crd", help="comma list of ours, grx, lrx, crd")
    parser.add_argument("--only", default="", help="comma list of scene names to score (the others still "
                        "pre-train); runs of disjoint --only lists merge with benchmarks/merge_results.py")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for tests (not a benchmark)")
    return parser


def merge_parser() -> argparse.ArgumentParser:
    parser = script_parser("Merge benchmark runs over disjoint scene sets (--only ...) or seeds (--first_seed)",
                           "python benchmarks/merge_results.py --out results/loo results/loo_part1 results/loo_part2",
                           {"OUT/benchmark.json, OUT/benchmark.md": "the merged rows and table"})
    parser.add_argument("runs", nargs="+", help="run_benchmark.py --out folders to merge")
    parser.add_argument("--out", required=True, help="folder for the merged benchmark.json / benchmark.md")
    return parser


def scale_parser() -> argparse.ArgumentParser:
    parser = script_parser("Peak memory of global RX (and our inference) on a memmapped synthetic cube",
                           "python benchmarks/scale_case.py --size 256 --bands 64 --out results/scale_case.json",
                           {"--out": "the result as JSON, when given (the cube itself goes to a temporary folder)"},
                           (("--set", "anomaly.config:AnomalyConfig"),))
    parser.add_argument("--size", type=int, default=1024, help="height and width of the synthetic cube")
    parser.add_argument("--bands", type=int, default=128, help="band count of the synthetic cube")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    parser.add_argument("--detector_ckpt", default=None, help="also run Stage 3 inference with this checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="anomaly-config override for that inference (e.g. device=cuda); repeatable")
    return parser


BATCH_MODES = ("loop", "1", "2", "cluster")


def batch_parser() -> argparse.ArgumentParser:
    parser = script_parser("Batch case: sspq-hsi detect on a folder of scenes with 1 and 2 local workers and on a "
                           "2-worker Dask LocalCluster, against a shell loop of main_anomaly.py",
                           "python benchmarks/batch_case.py --scenes ../shared/data/had --encoder_ckpt "
                           "checkpoints/encoder/universal_hsi_encoder.pth --out results/batch_case.json",
                           {"--out": "the seconds per scene of each mode and the conditions, as JSON, when given "
                                     "(the runs' outputs go to a temporary folder)"},
                           (("--set", "anomaly.config:AnomalyConfig"),))
    parser.add_argument("--scenes", required=True, help="folder (or glob, or @LIST) of the scenes to score")
    parser.add_argument("--encoder_ckpt", required=True, help="Stage 2 checkpoint the scenes are scored with")
    parser.add_argument("--modes", default=",".join(BATCH_MODES),
                        help="comma list of loop (python main_anomaly.py once per scene), 1 and 2 (--workers), "
                             "cluster (--cluster on a LocalCluster of 2 single-thread workers)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="anomaly-config override for every run; repeatable")
    return parser
