"""Benchmark: our detector against classical baselines on every labelled scene of a folder.

    python benchmarks/run_benchmark.py --scenes ../shared/data/had --pretrain ../shared/data/pretrain --out results/
    python benchmarks/run_benchmark.py --scenes ../shared/data/had --methods grx,lrx,crd --out results/
    python benchmarks/run_benchmark.py --scenes DIR --out results/ --quick          # tiny sizes (tests)

Writes `OUT/benchmark.json` ({"protocol", "rows", "speed"}; one row per scene x method x seed with keys
scene, method, mode, seed, auc, auc_pf_tau, auc_pd_tau, ap, seconds), `OUT/benchmark.md` (protocol text,
then one row per scene and one column per method: mean ROC AUC, +- std over seeds) and
`OUT/figures/<scene>.png` (false colour, gt, each method's map, ROC curves with a log false-alarm axis).

Methods: `ours` (Stages 1-3, `benchmarks/ours.py`; each head also as `ours/<head>`), `grx` global RX, `lrx` dual-window local RX on 30 principal
components, `crd` collaborative representation detector. The baselines are deterministic: they run
once per scene (row seed null, std 0); `--seeds N` repeats only the seeded methods. No method reads a
gt mask: gt is read only by utils.metrics after a map is made, and no parameter is tuned per scene.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python benchmarks/run_benchmark.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli_args import benchmark_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import numpy as np  # noqa: E402

from anomaly.baselines import crd, global_rx, local_rx  # noqa: E402
from anomaly.visualize import save_anomaly_figure  # noqa: E402
from data.io import load_scene  # noqa: E402
from data.scene import Scene  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.errors import ConfigError, DataError  # noqa: E402
from utils.logging import get_logger  # noqa: E402
from utils.metrics import detection_metrics  # noqa: E402
from benchmarks.cli_args import MODES  # noqa: E402
from benchmarks.ours import OursPipeline, OursResult  # noqa: E402

SCENE_SUFFIXES = (".npz", ".mat", ".hdr", ".npy")
QUICK_LINE = "- QUICK mode: tiny sizes for tests; these numbers are not a benchmark result."
ROW_KEYS = ("scene", "method", "mode", "seed", "auc", "auc_pf_tau", "auc_pd_tau", "ap", "seconds")


@dataclass(frozen=True)
class Method:
    """A detector under test: `score(scene, seed)` gives an (H, W) map, or for ours an `OursResult`
    (fused map plus per-head maps and stage timings); `seeded` methods run once per seed."""
    label: str
    seeded: bool
    params: str
    score: Callable[[Scene, int], Any]


def baseline_methods(quick: bool) -> dict[str, Method]:
    """The label-free baselines, with the one parameter set used on every scene."""
    lrx_args = dict(inner=3, outer=7, n_components=5) if quick else dict(inner=7, outer=21, n_components=30)
    crd_args = dict(inner=1, outer=5, lam=1e-6) if quick else dict(inner=3, outer=11, lam=1e-6)

    def lrx(scene: Scene, seed: int) -> np.ndarray:
        return local_rx(scene.cube, **{**lrx_args, "n_components": min(lrx_args["n_components"],
                                                                        scene.cube.shape[-1])})

    return {
        "grx": Method("global RX", False, "scene mean and covariance (pseudo-inverse), raw cube",
                      lambda scene, seed: global_rx(scene.cube)),
        "lrx": Method("local RX", False, f"dual window {lrx_args['inner']}/{lrx_args['outer']}, "
                      f"{lrx_args['n_components']} principal components, ridge 1e-6", lrx),
        "crd": Method("CRD", False, f"dual window {crd_args['inner']}/{crd_args['outer']}, lambda "
                      f"{crd_args['lam']:g}, cube min-max scaled", lambda scene, seed: crd(scene.cube, **crd_args)),
    }


def list_scenes(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--scenes/--pretrain {folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SCENE_SUFFIXES)
    if not paths:
        raise DataError(f"{folder}: holds no scene file ({', '.join(SCENE_SUFFIXES)})")
    return paths


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_methods(text: str, quick: bool, ours: Method) -> dict[str, Method]:
    available = {"ours": ours, **baseline_methods(quick)}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ConfigError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(available)}")
    return {n: available[n] for n in dict.fromkeys(names)}


def protocol_text(args: argparse.Namespace, methods: dict[str, Method], scenes: list[str],
                  pretrain: list[str]) -> str:
    lines = [
        f"- Scenes scored ({len(scenes)}): {', '.join(scenes)}.",
        f"- Mode: {args.mode}. transductive: Stages 1-2 pre-train once on every scene given (scored and "
        f"--pretrain), labels never read; leave-one-out: the scored scene is left out of pre-training; "
        f"cross-scene: the scored scenes are dealt into --folds folds (sorted by name, round robin) and each "
        f"fold is scored by Stages 1-2 pre-trained on the other folds (and --pretrain).",
        f"- Pre-training-only scenes: {', '.join(pretrain) if pretrain else 'none'}.",
        f"- Seeds: {args.seeds} for seeded methods (mean +- std over seeds); deterministic methods run once.",
        "- No per-scene tuning: every method runs with one parameter set on all scenes; no threshold or "
        "weight reads a scored scene's gt (gt is read only to compute the metrics).",
        "- Metrics: ROC AUC (Pd vs Pf), average precision, AUC(Pf,tau) (lower is better) and AUC(Pd,tau) "
        "of the 3-D ROC, on min-max normalised maps (utils/metrics.py).",
    ]
    if args.mode == "cross-scene":
        lines.append(f"- Folds: {args.folds}.")
    lines += [f"- `{key}` ({m.label}): {m.params}." for key, m in methods.items()]
    if args.set:
        lines.append(f"- Stage 3 overrides: {', '.join(args.set)}.")
    if args.quick:
        lines.append(QUICK_LINE)
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.4f}" if len(values) == 1 else f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def markdown(protocol: str, rows: list[dict[str, Any]], scenes: list[str], speed: dict[str, Any]) -> str:
    keys = list(dict.fromkeys(r["method"] for r in rows))  # methods, then ours/<head>, in run order
    out = ["# Hyperspectral anomaly detection benchmark", "", "## Protocol", "", protocol, "",
           "## ROC AUC (one row per scene; mean ± std over seeds where a method is seeded)", "",
           "| scene | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for scene in scenes:
        cells = [_cell([r["auc"] for r in rows if r["scene"] == scene and r["method"] == k]) for k in keys]
        out.append(f"| {scene} | " + " | ".join(cells) + " |")
    # mean over scenes per seed, then mean/std of those means over seeds
    means = []
    for k in keys:
        seeds = sorted({r["seed"] for r in rows if r["method"] == k}, key=lambda s: -1 if s is None else s)
        per_seed = [np.mean([r["auc"] for r in rows if r["method"] == k and r["seed"] == s]) for s in seeds]
        means.append(_cell(per_seed))
    out += ["| **mean** | " + " | ".join(f"**{m}**" for m in means) + " |", "",
            "## All metrics, mean over scenes and seeds", "",
            "| method | AUC | AP | AUC(Pf,tau) (lower better) | AUC(Pd,tau) | seconds per scene |",
            "|---|---|---|---|---|---|"]
    for k in keys:
        sel = [r for r in rows if r["method"] == k]
        stats = [np.mean([r[m] for r in sel]) for m in ("auc", "ap", "auc_pf_tau", "auc_pd_tau", "seconds")]
        out.append(f"| {k} | " + " | ".join(f"{v:.4f}" for v in stats[:4]) + f" | {stats[4]:.3f} |")
    out += ["", "## Speed and memory", ""]
    for k, value in speed["pixels_per_second"].items():
        out.append(f"- {k} inference: {value:,.0f} pixels/second (all scored pixels / total seconds).")
    if speed.get("ours_over_grx_throughput") is not None:
        out.append(f"- throughput ratio ours / global RX: {speed['ours_over_grx_throughput']:.4f}.")
    out.append(f"- peak resident memory of the benchmark process: {speed['peak_rss_mb']:.0f} MiB.")
    for stage, values in speed.get("stage_seconds", {}).items():
        if values:
            out.append(f"- {stage}: {np.mean(values):.1f} s per run on average ({len(values)} runs).")
    out.append("- scale case (1024 x 1024 x 128 memmapped .npy): `python benchmarks/scale_case.py`.")
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = get_logger("benchmark")
    if args.mode not in MODES:
        raise ConfigError(f"--mode must be one of {MODES}, got {args.mode!r}")
    if args.seeds < 1 or args.first_seed < 0:
        raise ConfigError(f"--seeds must be >= 1 and --first_seed >= 0, got {args.seeds} and {args.first_seed}")
    out = Path(args.out)
    paths = {p.stem: p for p in list_scenes(args.scenes)}
    scored = {name: load_scene(p) for name, p in paths.items()}
    unlabelled = [name for name, s in scored.items() if s.gt is None or not np.any(s.gt)]
    for name in unlabelled:
        log.info(f"{name}: no anomaly in its gt (or no gt): used for pre-training only, not scored")
    scored_names = [name for name in scored if name not in unlabelled]
    if args.only:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(only) - set(scored_names))
        if unknown:
            raise ConfigError(f"--only: {unknown} are not labelled scenes of {args.scenes} ({', '.join(scored_names)})")
        scored_names = [name for name in scored_names if name in only]
    if not scored_names:
        raise DataError(f"{args.scenes}: no scene with an anomaly gt mask to score")
    extra_paths = {p.stem: p for p in list_scenes(args.pretrain)} if args.pretrain else {}
    clash = sorted(set(extra_paths) & set(paths))
    if clash:
        raise DataError(f"scene name(s) {clash} appear in both --scenes and --pretrain: rename one copy")
    paths.update(extra_paths)
    all_scenes = {**scored, **{name: load_scene(p) for name, p in extra_paths.items()}}
    if args.mode == "cross-scene" and not 2 <= args.folds <= len(scored_names):
        raise ConfigError(f"--folds must lie in [2, {len(scored_names)}] (the scored scenes), got {args.folds}")
    fold_of = {name: i % args.folds for i, name in enumerate(sorted(n for n in scored if n not in unlabelled))}
    pipeline = OursPipeline(out / "work", quick=args.quick, stage3_overrides=list(args.set))

    def held_out(scene: str, other: str) -> bool:
        """True when `other` must stay out of the pre-training that scores `scene`."""
        if args.mode == "leave-one-out":
            return other == scene
        if args.mode == "cross-scene":
            return other in fold_of and fold_of[other] == fold_of[scene]
        return False

    def ours_score(scene: Scene, seed: int) -> OursResult:
        train = {name: paths[name] for name in all_scenes if not held_out(scene.name, name)}
        return pipeline.score(scene, paths[scene.name], seed, train)

    ours = Method("ours (SSPQ tokenizer + BERT + Stage 3 heads)", True,
                  "configs/tokenizer.yaml, configs/pretrain.yaml, configs/anomaly.yaml as committed", ours_score)
    methods = parse_methods(args.methods, args.quick, ours)
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {k: 0.0 for k in methods}
    pixels: dict[str, int] = {k: 0 for k in methods}
    stage3_train: list[float] = []

    def add_row(name: str, key: str, seed: int | None, scores: np.ndarray, elapsed: float) -> dict[str, float]:
        metrics = detection_metrics(scores, scored[name].gt)
        row = {"scene": name, "method": key, "mode": args.mode, "seed": seed, **metrics, "seconds": elapsed}
        rows.append({k: row[k] for k in ROW_KEYS})
        return metrics

    protocol = protocol_text(args, methods, scored_names, list(extra_paths) + unlabelled)

    def write_results() -> dict[str, Any]:
        """(Re)write benchmark.json / .md from the rows so far: a killed run keeps what it measured."""
        speed: dict[str, Any] = {
            "seconds_total": seconds,
            "pixels_per_second": {k: pixels[k] / seconds[k] for k in ("ours", "grx")
                                  if k in methods and seconds[k] > 0},
            "peak_rss_mb": peak_rss_mb(),
            "stage_seconds": {"pretrain_stages_1_2": pipeline.pretrain_seconds, "stage3_train": stage3_train},
        }
        pps = speed["pixels_per_second"]
        speed["ours_over_grx_throughput"] = pps["ours"] / pps["grx"] if {"ours", "grx"} <= pps.keys() else None
        result = {"protocol": protocol, "rows": rows, "speed": speed}
        text = markdown(protocol, rows, scored_names, speed)
        write_files({out / "benchmark.json": json.dumps(result, indent=1), out / "benchmark.md": text})
        return result

    for name in scored_names:
        scene = scored[name]
        first_maps: dict[str, np.ndarray] = {}
        for key, method in methods.items():
            for seed in (range(args.first_seed, args.first_seed + args.seeds) if method.seeded else [None]):
                start = time.perf_counter()
                result = method.score(scene, 0 if seed is None else seed)
                elapsed = time.perf_counter() - start
                if isinstance(result, OursResult):  # timed by the pipeline: inference alone, not training
                    elapsed = result.inference_seconds
                    stage3_train.append(result.train_seconds)
                    for head, head_map in result.heads.items():
                        add_row(name, f"{key}/{head}", seed, head_map, elapsed)
                    if result.learned is not None:
                        add_row(name, f"{key}/learned", seed, result.learned, elapsed)
                    result = result.fused
                scores = np.asarray(result, dtype=np.float32)
                metrics = add_row(name, key, seed, scores, elapsed)
                seconds[key] += elapsed
                pixels[key] += int(scores.size)
                first_maps.setdefault(key, scores)
                log.info(f"{name} {key} seed={seed}: AUC {metrics['auc']:.4f} ({elapsed:.2f} s)")
                write_results()
        fused = first_maps.pop("ours", None)
        save_anomaly_figure(out / "figures" / f"{name}.png", scene.cube, scene.gt, fused,
                            {methods[k].label: v for k, v in first_maps.items()}, name, scene.wavelengths)
    result = write_results()
    log.info(f"wrote {out / 'benchmark.md'}, {out / 'benchmark.json'} and {out / 'figures'}/")
    return result


if __name__ == "__main__":
    run_main(run, ARGS)
