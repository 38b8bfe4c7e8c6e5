"""Scale case: peak memory of streamed global RX on a 1024 x 1024 x 128 float32 cube read from a memmap.

    python benchmarks/scale_case.py                       # 1024 x 1024 x 128 (512 MiB on disk, in a temp dir)
    python benchmarks/scale_case.py --size 256 --bands 64 --out results/scale_case.json

Writes a synthetic cube (smooth background + noise, written in row chunks through `open_memmap`, never
held whole) into a temporary folder, then, in a fresh child process, opens it with `mmap_mode='r'`
and runs `anomaly.baselines.global_rx` (covariance accumulated in row chunks, scoring chunk by chunk).
Reports wall seconds, pixels/second and the child's peak resident memory: VmHWM from /proc/self/status
(ru_maxrss would not do: Linux carries the parent's peak across exec). The peak counts the memmap's file
pages that the kernel keeps resident, so the file-backed and anonymous parts at the end are reported
too, and the RSS after the imports (torch included) before global RX starts.

With `--detector_ckpt PATH` (a Stage 3 checkpoint, e.g. checkpoints/anomaly/SCENE/anomaly_detector.pth) a second
child runs our inference (`anomaly.inference.run_inference`) on the same memmapped cube and reports the
same figures (and, on CUDA, its peak GPU memory: `torch.cuda.max_memory_allocated`). `--set KEY=VALUE` passes
anomaly-config overrides to that inference (after the default `device=cpu`: `--set device=cuda` scores on the
GPU). Patch heads stream in batches; the grx / lrx heads read the prepared cube in row chunks and
hold its leading principal components (H x W x 30 float32, 120 MiB at 1024 x 1024) for local RX.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/scale_case.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli_args import scale_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import numpy as np  # noqa: E402

from utils.atomic import write_files  # noqa: E402
from utils.errors import ConfigError  # noqa: E402

CHUNK_ROWS = 64


def write_cube(path: Path, size: int, bands: int, seed: int = 0) -> None:
    """Synthetic (size, size, bands) float32 .npy written chunk by chunk: 3 smooth endmembers + noise."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, bands)
    endmembers = np.stack([np.exp(-((grid - c) / 0.3) ** 2) for c in (0.2, 0.5, 0.8)])  # (3, B)
    cube = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, size, bands))
    cols = np.linspace(0.0, 3.0, size)
    for r0 in range(0, size, CHUNK_ROWS):
        rows = np.arange(r0, min(size, r0 + CHUNK_ROWS))[:, None] / size  # (r, 1)
        abund = np.stack([np.sin(rows + cols) ** 2, np.cos(2 * rows - cols) ** 2,
                          np.full((len(rows), size), 0.5)], axis=-1)  # (r, W, 3)
        block = abund @ endmembers + 0.01 * rng.normal(size=(len(rows), size, bands))  # (r, W, B)
        cube[r0:r0 + len(rows)] = block.astype(np.float32)
    cube.flush()
    del cube


_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from anomaly.baselines import global_rx

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {{k: int(fields[k].split()[0]) / 1024.0 for k in ("VmHWM", "RssFile", "RssAnon")}}

cube = np.load({path!r}, mmap_mode="r")
before = status()["VmHWM"]
start = time.perf_counter()
scores = global_rx(cube, chunk_rows={chunk})
seconds = time.perf_counter() - start
end = status()
print(json.dumps({{"seconds": seconds, "rss_after_imports_mb": before, "finite": bool(np.isfinite(scores).all()),
                  "peak_rss_mb": end["VmHWM"], "rss_file_mb_at_end": end["RssFile"],
                  "rss_anon_mb_at_end": end["RssAnon"]}}))
"""

_CHILD_OURS = """
import json, sys, time
sys.path.insert(0, {root!r})
from anomaly.inference import run_inference

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {{k: int(fields[k].split()[0]) / 1024.0 for k in ("VmHWM", "RssFile", "RssAnon")}}

before = status()["VmHWM"]
start = time.perf_counter()
run_inference(None, {ckpt!r}, {path!r}, out_dir={out!r}, overrides=["device=cpu", *{overrides!r}])
seconds = time.perf_counter() - start
end = status()
import torch
gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
print(json.dumps({{"seconds": seconds, "rss_after_imports_mb": before, "peak_rss_mb": end["VmHWM"],
                  "rss_file_mb_at_end": end["RssFile"], "rss_anon_mb_at_end": end["RssAnon"],
                  "peak_gpu_mb": gpu_mb}}))
"""


def _child(code: str) -> dict:
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"scale-case child failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    if args.size < 16 or args.bands < 2:
        raise ConfigError(f"--size must be >= 16 and --bands >= 2, got {args.size} and {args.bands}")
    with tempfile.TemporaryDirectory(prefix="sspq_scale_") as tmp:
        path = Path(tmp) / "cube.npy"
        start = time.perf_counter()
        write_cube(path, args.size, args.bands)
        write_seconds = time.perf_counter() - start
        root = str(Path(__file__).resolve().parent.parent)
        measured = _child(_CHILD.format(root=root, path=str(path), chunk=CHUNK_ROWS))
        ours = None
        if args.detector_ckpt:
            ours = _child(_CHILD_OURS.format(root=root, path=str(path), ckpt=str(Path(args.detector_ckpt).resolve()),
                                             out=str(Path(tmp) / "out"), overrides=list(args.overrides)))
    pixels = args.size * args.size
    result = {"shape": [args.size, args.size, args.bands], "dtype": "float32",
              "cube_mb": pixels * args.bands * 4 / 2**20, "write_seconds": write_seconds,
              "global_rx": {**measured, "pixels_per_second": pixels / measured["seconds"],
                            "chunk_rows": CHUNK_ROWS}}
    if ours is not None:
        result["ours"] = {**ours, "detector_ckpt": args.detector_ckpt, "overrides": list(args.overrides),
                          "pixels_per_second": pixels / ours["seconds"]}
    print(json.dumps(result, indent=1))
    if args.out:
        write_files({Path(args.out): json.dumps(result, indent=1)})
    return result


if __name__ == "__main__":
    run_main(run, ARGS)
