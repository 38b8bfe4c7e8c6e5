"""Merge benchmark runs over disjoint scene sets (`--only ...`) or seeds (`--first_seed`) into one table.

    python benchmarks/merge_results.py --out results/loo results/loo_part1 results/loo_part2 ...

Rows are concatenated (a scene scored twice by the same method, mode and seed is an error, and so is
mixing --quick runs with full ones); the protocol's scene and seed lines are rebuilt from the rows; speed
figures are combined per run: throughputs and the ours / global RX ratio averaged over runs, peak
memory the largest run's, stage timings pooled. Writes OUT/benchmark.json and OUT/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/merge_results.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli_args import merge_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import numpy as np  # noqa: E402

from benchmarks.run_benchmark import QUICK_LINE, markdown  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.errors import DataError  # noqa: E402


def merge(runs: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    rows = [row for run in runs for row in run["rows"]]
    modes = sorted({r["mode"] for r in rows})
    if len(modes) > 1:
        raise DataError(f"the runs use different modes {modes}: merge runs of one protocol only")
    quick = {QUICK_LINE in run["protocol"] for run in runs}
    if len(quick) > 1:
        raise DataError("some runs used --quick (tiny sizes) and others did not: merge runs of one kind only")
    keys = [(r["scene"], r["method"], r["mode"], r["seed"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise DataError("the runs score the same scene with the same method, mode and seed: merge disjoint --only runs")
    speeds = [run["speed"] for run in runs]
    pps: dict[str, list[float]] = {}
    for speed in speeds:
        for key, value in speed["pixels_per_second"].items():
            pps.setdefault(key, []).append(value)
    ratios = [s["ours_over_grx_throughput"] for s in speeds if s.get("ours_over_grx_throughput") is not None]
    stages: dict[str, list[float]] = {}
    for speed in speeds:
        for key, values in speed.get("stage_seconds", {}).items():
            stages.setdefault(key, []).extend(values)
    speed = {"pixels_per_second": {k: float(np.mean(v)) for k, v in pps.items()},
             "ours_over_grx_throughput": float(np.mean(ratios)) if ratios else None,
             "peak_rss_mb": max(s["peak_rss_mb"] for s in speeds), "stage_seconds": stages}
    scenes = list(dict.fromkeys(r["scene"] for r in rows))
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    rebuilt = {"- Scenes scored": f"- Scenes scored ({len(scenes)}): {', '.join(scenes)}.",
               "- Seeds:": f"- Seeds: {len(seeds)} for seeded methods ({', '.join(map(str, seeds))}; mean +- std over "
                           f"seeds); deterministic methods run once."}
    lines = [next((text for start, text in rebuilt.items() if line.startswith(start)), line)
             for line in runs[0]["protocol"].splitlines()]  # the other lines are the same in every run ...
    lines += list(dict.fromkeys(line for run in runs[1:] for line in run["protocol"].splitlines()
                                if line.startswith("- `") and line not in lines))  # ... but each run's methods
    protocol = "\n".join(lines) + f"\n- Merged from {len(runs)} runs over disjoint scenes or seeds: {', '.join(sources)}."
    return {"protocol": protocol, "rows": rows, "speed": speed}


def main(args: argparse.Namespace) -> None:
    runs, sources = [], []
    for folder in args.runs:
        path = Path(folder) / "benchmark.json"
        if not path.is_file():
            raise DataError(f"{path}: not found (is {folder} a run_benchmark.py --out folder?)")
        runs.append(json.loads(path.read_text()))
        sources.append(str(folder))
    result = merge(runs, sources)
    scenes = list(dict.fromkeys(r["scene"] for r in result["rows"]))
    out = Path(args.out)
    text = markdown(result["protocol"], result["rows"], scenes, result["speed"])
    write_files({out / "benchmark.json": json.dumps(result, indent=1), out / "benchmark.md": text})
    print(f"wrote {out / 'benchmark.md'} and {out / 'benchmark.json'} ({len(result['rows'])} rows)")


if __name__ == "__main__":
    run_main(main, ARGS)
