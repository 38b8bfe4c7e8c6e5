"""One prepared GPU run (issue 13): Stages 1-3 with AMP on real scenes, then the 1024 x 1024 x 128 memmapped
scale case; prints seconds per stage, pixels per second of inference, peak GPU memory and the GPU's name.

    bash benchmarks/gpu_check.sh                                # CUDA: the HAD scenes, abu-urban-1, scale 1024
    bash benchmarks/gpu_check.sh --work_dir /tmp/gpu --scenes ../shared/data/had --scene abu-urban-1.npz
    bash benchmarks/gpu_check.sh --gpu_sizes                    # the configs/*_gpu.yaml sizes, time-boxed
    python benchmarks/gpu_check.py --dry_run                    # CPU: the same path, tiny models, scale 64

What runs, in this order, with device=cuda and amp=true on every stage (device=cpu under --dry_run):
1. Stage 1 (`train_sspq_tokenizer`) and Stage 2 (`pretrain_universal_hsi`) on `--scenes`, as `main_pretrain.py
   --scenes` runs them (one domain per scene; the tokenizer trains on the same scene list);
2. Stage 3 training (`train_anomaly_detector`) and inference (`run_inference`) on `--scene`, as `main_anomaly.py`;
3. `benchmarks/scale_case.py --detector_ckpt <that detector> --set device=cuda --set amp=true` in a child process
   (global RX and our inference on a synthetic memmapped cube, each in a fresh process: peak RSS and GPU memory).
The stages run in this process, each timed, with `torch.cuda.max_memory_allocated` reset before and read after.
Every file goes under `--work_dir` (default: a new temporary folder, kept), never into the checkout's
checkpoints/ or outputs/; the JSON goes to `--out` (default `<work_dir>/gpu_check.json`), a table to stdout.

Sizes: by default the repository's configs (configs/{tokenizer,pretrain,anomaly}.yaml: what the README's commands
train, timed on the GPU); `--gpu_sizes` takes configs/*_gpu.yaml (K_s = K_x = 256, bert-base) with fewer epochs
(GPU_SIZES) to stay in the time box; `--tiny` (implied by `--dry_run`) the benchmark's QUICK sizes.
`--tokenizer_set`, `--set`, `--anomaly_set` add overrides per stage. Not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python benchmarks/gpu_check.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from anomaly.inference import run_inference  # noqa: E402
from anomaly.train_anomaly import train_anomaly_detector  # noqa: E402
from benchmarks.ours import QUICK  # noqa: E402
from data.scenes import scene_overrides  # noqa: E402
from encoder.pretrain_mtp import pretrain_universal_hsi  # noqa: E402
from sspq_tokenizer.train_tokenizer import train_sspq_tokenizer  # noqa: E402
from utils.atomic import write_files  # noqa: E402
from utils.cli import run_cli  # noqa: E402
from utils.errors import ConfigError, SSPQError  # noqa: E402
from utils.logging import get_logger  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"tokenizer": "configs/tokenizer.yaml", "pretrain": "configs/pretrain.yaml", "anomaly": "configs/anomaly.yaml"}
GPU_CONFIGS = {"tokenizer": "configs/tokenizer_gpu.yaml", "pretrain": "configs/pretrain_gpu.yaml",
               "anomaly": "configs/anomaly_gpu.yaml"}
# --gpu_sizes: the spec's model sizes with the epochs cut so that Stages 1-3 stay within a few minutes
GPU_SIZES = {"tokenizer": ["num_epochs=5", "max_patches_per_scene=1000"],
             "pretrain": ["pretrain_epochs=3", "steps_per_epoch=100", "num_warmup_steps=30"],
             "anomaly": ["anomaly_epochs=1"]}
# --gpu_sizes --tiny: what the GPU Stage 3 config needs besides QUICK to fit QUICK's 4 x 4 patches
TINY_GPU_SIZES = {"tokenizer": [], "pretrain": [], "anomaly": ["inference_stride=0", "lm_block=2"]}
DRY_RUN_SCALE_SIZE = 64


def _peak_gpu_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def timed(name: str, device: torch.device, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict]:
    """`fn(*args, **kwargs)` timed, with the peak GPU memory it allocated (None on CPU); logs both."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row = {"name": name, "seconds": time.perf_counter() - start, "peak_gpu_mb": _peak_gpu_mb(device),
           "wrote": str(result)}
    gpu = "" if row["peak_gpu_mb"] is None else f", peak GPU memory {row['peak_gpu_mb']:.0f} MiB"
    get_logger("gpu_check").info(f"{name}: {row['seconds']:.1f} s{gpu}")
    return result, row


def _device(args: argparse.Namespace) -> torch.device:
    if args.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device} requested but torch.cuda.is_available() is false "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                          f"run on a CUDA machine, or --dry_run for the CPU path")
    return torch.device("cuda:0" if args.device == "cuda" else args.device)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _scene_path(args: argparse.Namespace) -> Path:
    scene = Path(args.scene)
    if not scene.is_file() and len(args.scenes) == 1 and Path(args.scenes[0]).is_dir():
        scene = Path(args.scenes[0]) / args.scene
    if not scene.is_file():
        raise ConfigError(f"--scene {args.scene}: no such file (looked for it as given and in --scenes "
                          f"{' '.join(args.scenes)})")
    return scene


def _scale_case(args: argparse.Namespace, detector: Path, device: torch.device, work: Path) -> dict:
    """benchmarks/scale_case.py in a child process (its own children measure global RX and our inference)."""
    out = work / "scale_case.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "scale_case.py"), "--size", str(args.scale_size),
           "--bands", str(args.scale_bands), "--detector_ckpt", str(detector), "--out", str(out),
           "--set", f"device={device}", "--set", "amp=true", *[f"--set={o}" for o in args.anomaly_overrides]]
    get_logger("gpu_check").info(f"scale case: {' '.join(cmd)}")
    env = {**os.environ, "TMPDIR": str(work)}  # its 512 MiB cube goes under the work folder too
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        _, stderr = child.communicate(timeout=args.scale_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # its own children too
        child.communicate()
        return {"error": f"timed out after {args.scale_timeout} s (--scale_timeout)",
                "seconds": time.perf_counter() - start}
    except BaseException:  # Ctrl-C or gpu_check.sh's timeout: the child's session would outlive this process
        os.killpg(child.pid, signal.SIGKILL)
        raise
    if child.returncode != 0:
        last = [line for line in stderr.strip().splitlines() if line.strip()] or ["(no output)"]
        return {"error": f"exit status {child.returncode}: {last[-1]}", "seconds": time.perf_counter() - start}
    raw = json.loads(out.read_text())
    ours, grx = raw["ours"], raw["global_rx"]
    return {"shape": raw["shape"], "seconds": ours["seconds"], "pixels_per_second": ours["pixels_per_second"],
            "peak_gpu_mb": ours.get("peak_gpu_mb"), "peak_rss_mb": ours["peak_rss_mb"],
            "global_rx_seconds": grx["seconds"], "global_rx_pixels_per_second": grx["pixels_per_second"],
            "global_rx_peak_rss_mb": grx["peak_rss_mb"], "ratio_to_global_rx": ours["seconds"] / grx["seconds"],
            "wall_seconds": time.perf_counter() - start, "raw": raw}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(result: dict) -> str:
    rows = [(r["name"], r["seconds"], r.get("pixels_per_second"), r["peak_gpu_mb"], None) for r in result["stages"]]
    scale = result.get("scale_case") or {}
    if "error" not in scale and scale:
        shape = "x".join(map(str, scale["shape"]))
        rows.append((f"scale case, ours {shape}", scale["seconds"], scale["pixels_per_second"],
                     scale["peak_gpu_mb"], scale["peak_rss_mb"]))
        rows.append((f"scale case, global RX {shape}", scale["global_rx_seconds"],
                     scale["global_rx_pixels_per_second"], None, scale["global_rx_peak_rss_mb"]))
    width = max(len(r[0]) for r in rows)
    lines = [f"gpu_check on {result['gpu_name'] or 'cpu'} ({result['device']}, torch {result['torch']}, "
             f"AMP {result['amp_dtype'] or 'off (cpu: fp32)'}{', tiny models' if result['tiny'] else ''})",
             f"{'stage':<{width}}  {'seconds':>8}  {'pixels/s':>10}  {'peak GPU MiB':>12}  {'peak RSS MiB':>12}"]
    for name, seconds, pps, gpu, rss in rows:
        lines.append(f"{name:<{width}}  {seconds:>8.1f}  {_fmt(pps, '>10,.0f'):>10}  {_fmt(gpu, '>12,.0f'):>12}  "
                     f"{_fmt(rss, '>12,.0f'):>12}")
    if "error" in scale:
        lines.append(f"scale case: {scale['error']}")
    elif scale:
        lines.append(f"scale case: ours / global RX = {scale['ratio_to_global_rx']:.1f}x")
    lines.append(f"total {result['total_seconds']:.1f} s; JSON {result['json']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    if args.dry_run:
        args.device, args.tiny = "cpu", True
        args.scale_size = args.scale_size or DRY_RUN_SCALE_SIZE
    args.scale_size = args.scale_size or 1024
    device = _device(args)
    scene = _scene_path(args)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="sspq_gpu_check_"))
    for folder in ("checkpoints", "outputs"):
        if _inside(work, ROOT / folder):
            raise ConfigError(f"--work_dir {work} lies inside the checkout's {folder}/; name a folder outside it")
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else work / "gpu_check.json"
    configs = GPU_CONFIGS if args.gpu_sizes else CONFIGS
    configs = {stage: str(ROOT / path) for stage, path in configs.items()}
    common = [f"device={device}", "amp=true"]

    def sets(stage: str, own: list[str], user: list[str]) -> list[str]:
        return [*common, *own, *(GPU_SIZES[stage] if args.gpu_sizes else []), *(QUICK[stage] if args.tiny else []),
                *(TINY_GPU_SIZES[stage] if args.tiny and args.gpu_sizes else []), *user]

    tok_set = scene_overrides(args.scenes, sets("tokenizer", [f"output_dir={work / 'tokenizer'}"],
                                                args.tokenizer_overrides), domains=False)
    pre_set = scene_overrides(args.scenes, sets("pretrain", [f"output_dir={work / 'encoder'}"], args.overrides))
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    amp_dtype = None if device.type != "cuda" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    print(f"gpu_check: on {gpu_name or 'cpu'} ({device}{', dry run' if args.dry_run else ''}"
          f"{', tiny models' if args.tiny else ''}), configs {', '.join(configs.values())}:\n"
          f"  Stages 1-2 on {' '.join(args.scenes)}, Stage 3 training and inference on {scene},\n"
          f"  then benchmarks/scale_case.py at {args.scale_size} x {args.scale_size} x {args.scale_bands};\n"
          f"  writes everything under {work} (JSON {out}), nothing in {ROOT}/checkpoints or outputs", flush=True)

    start = time.perf_counter()
    stages = []
    tokenizer_ckpt, row = timed("Stage 1 tokenizer", device, train_sspq_tokenizer, configs["tokenizer"], tok_set)
    stages.append(row)
    encoder_ckpt, row = timed("Stage 2 pre-training", device, pretrain_universal_hsi, configs["pretrain"], pre_set,
                              tokenizer_ckpt=tokenizer_ckpt)
    stages.append(row)
    ano_set = sets("anomaly", [f"output_dir={work / 'detector'}", f"encoder_ckpt={encoder_ckpt}",
                               f"data_path={scene}"], args.anomaly_overrides)
    detector, row = timed("Stage 3 training", device, train_anomaly_detector, configs["anomaly"], ano_set)
    stages.append(row)
    folder, row = timed(f"inference {scene.stem}", device, run_inference, configs["anomaly"], detector,
                        out_dir=str(work / "outputs" / scene.stem), overwrite=True, overrides=ano_set)
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    height, width = metrics["shape"][:2]
    row.update({"shape": metrics["shape"], "pixels_per_second": height * width / row["seconds"],
                "scoring_seconds": metrics["runtime_seconds"],
                "auc_fused": metrics["fused"]["auc"] if "fused" in metrics else None})
    stages.append(row)
    scale = _scale_case(args, Path(detector), device, work)
    result = {"gpu_name": gpu_name, "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "amp": device.type == "cuda", "amp_dtype": amp_dtype, "dry_run": args.dry_run, "tiny": args.tiny,
              "gpu_sizes": args.gpu_sizes, "configs": configs, "host": platform.node(), "cpu_count": os.cpu_count(),
              "scenes": args.scenes, "scene": str(scene), "work_dir": str(work), "json": str(out),
              "overrides": {"tokenizer": tok_set, "pretrain": pre_set, "anomaly": ano_set},
              "stages": stages, "scale_case": scale, "total_seconds": time.perf_counter() - start}
    write_files({out: json.dumps(result, indent=1) + "\n"})
    print(table(result), flush=True)
    if "error" in scale:
        raise SSPQError(f"scale case failed: {scale['error']} (Stages 1-3 are in {out})")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="one prepared GPU run: Stages 1-3 with AMP on real scenes and the "
                                                 "1024 x 1024 x 128 memmapped scale case, timed")
    parser.add_argument("--scenes", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "had")],
                        metavar="DIR|GLOB|FILE", help="pre-training scenes, as main_pretrain.py --scenes "
                                                      "(default ../shared/data/had)")
    parser.add_argument("--scene", default="abu-urban-1.npz",
                        help="Stage 3 scene: a file, or a file name in the one --scenes folder (default abu-urban-1.npz)")
    parser.add_argument("--work_dir", default=None, help="where every file goes (default: a new temporary folder)")
    parser.add_argument("--out", default=None, help="the JSON result (default <work_dir>/gpu_check.json)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models (benchmarks/ours.py QUICK sizes)")
    parser.add_argument("--dry_run", action="store_true",
                        help=f"CPU path: --device cpu --tiny, scale case {DRY_RUN_SCALE_SIZE} x {DRY_RUN_SCALE_SIZE}")
    parser.add_argument("--gpu_sizes", action="store_true",
                        help="configs/*_gpu.yaml (spec sizes, bert-base) with fewer epochs, instead of configs/*.yaml")
    parser.add_argument("--scale_size", type=int, default=None, help="scale case height and width (default 1024)")
    parser.add_argument("--scale_bands", type=int, default=128, help="scale case band count (default 128)")
    parser.add_argument("--scale_timeout", type=float, default=360.0, help="seconds before the scale case is stopped")
    parser.add_argument("--tokenizer_set", dest="tokenizer_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="Stage 1 override; repeatable")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Stage 2 override; repeatable")
    parser.add_argument("--anomaly_set", dest="anomaly_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Stage 3 and inference override (the scale case's too); repeatable")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


if __name__ == "__main__":
    run_cli(run, build_parser())
