"""Stage 1: train the SSPQ tokenizer (spec 4.4).

    python sspq_tokenizer/train_tokenizer.py --config configs/tokenizer.yaml
    python -m sspq_tokenizer.train_tokenizer --config configs/tokenizer.yaml --set num_epochs=2
    python sspq_tokenizer/train_tokenizer.py --config configs/tokenizer.yaml --resume   # from {output_dir}/last.pth
    python sspq_tokenizer/train_tokenizer.py --scenes ../shared/data/had   # these scenes, not pretrain_datasets

Every scene of `pretrain_datasets` is loaded, fitted with its own SpectralPreprocessor (num_bands,
normalize) and cut into patches (patch_size, stride; at most max_patches_per_scene, drawn with the
seed); a seeded permutation splits all patches into train / validation. Each epoch logs one line: train
loss, validation reconstruction error from the codes and from the un-quantised latents, and per codebook
the perplexity of the codes in use (the checkpoint's metrics add each branch's error and the share of
codes used). `{output_dir}/best.pth` keeps the epoch with the lowest validation reconstruction error (from
codes); `{output_dir}/last.pth` is written every epoch for --resume.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python sspq_tokenizer/train_tokenizer.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sspq_tokenizer.cli_args import tokenizer_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data.datasets import HSIPatchExtractor  # noqa: E402
from data.io import load_scene  # noqa: E402
from data.preprocess import SpectralPreprocessor  # noqa: E402
from data.transforms import Compose, GaussianNoise, RandomRot90Flip  # noqa: E402
from sspq_tokenizer.config import TokenizerConfig  # noqa: E402
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer  # noqa: E402
from sspq_tokenizer.quantizer import codebook_usage  # noqa: E402
from utils.checkpoint import check_resume_config, load_checkpoint, save_checkpoint  # noqa: E402
from data.scenes import check_scene_entries, scene_overrides  # noqa: E402
from utils.config import load_config, to_dict  # noqa: E402
from utils.errors import CheckpointError, DataError  # noqa: E402
from utils.interrupt import interruptible  # noqa: E402
from utils.logging import get_logger, progress  # noqa: E402
from utils.run_lock import lock_output_dir, unlock_output_dir  # noqa: E402
from utils.runtime import autocast, make_scaler, resolve_device, rng_state, set_rng_state, set_seed  # noqa: E402
from utils.step_guard import StepGuard  # noqa: E402

# config keys that may change between an interrupted run and its --resume
RESUMABLE_CHANGES = ("num_epochs", "device", "cpu_threads")


def load_patches(cfg: TokenizerConfig, log: Any) -> torch.Tensor:
    """All training patches of all scenes, preprocessed: (N, num_bands, S, S) float32."""
    extractor = HSIPatchExtractor(cfg.patch_size, cfg.stride)
    chunks = []
    for i, entry in enumerate(cfg.pretrain_datasets):
        scene = load_scene(entry.data_path, entry.cube_key, entry.gt_key, entry.gt_path, entry.cube_layout)
        prep = SpectralPreprocessor.fit(scene.cube, cfg.num_bands, cfg.normalize, scene.wavelengths,
                                        source=entry.data_path, valid=scene.valid)
        coords = extractor.with_data(extractor.coords(*scene.cube.shape[:2]), scene.valid)  # (n, 2)
        if len(coords) == 0:
            raise DataError(f"pretrain_datasets '{entry.name}': no {cfg.patch_size} x {cfg.patch_size} patch of "
                            f"{entry.data_path} is free of no-data pixels")
        if cfg.max_patches_per_scene is not None and len(coords) > cfg.max_patches_per_scene:
            pick = np.random.default_rng(cfg.seed + i).permutation(len(coords))[:cfg.max_patches_per_scene]
            coords = coords[np.sort(pick)]
        raw = extractor.gather(scene.cube, coords)  # (n, S, S, B_raw)
        patches = prep.transform(raw).transpose(0, 3, 1, 2)  # (n, num_bands, S, S)
        chunks.append(torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)))
        log.info(f"scene {entry.name}: {scene.cube.shape} -> {len(coords)} patches "
                 f"(kept {prep.info['kept_bands']} of {prep.info['raw_bands']} bands)")
    patches = torch.cat(chunks)
    if len(patches) < 2:
        raise DataError(f"only {len(patches)} patch(es) in pretrain_datasets: need at least 2 to split train/val")
    return patches


def split_indices(num: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded permutation -> (train indices, val indices), both non-empty."""
    perm = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    num_val = min(num - 1, max(1, round(num * val_fraction)))
    return perm[num_val:], perm[:num_val]


def _augment(cfg: TokenizerConfig, generator: torch.Generator) -> Compose | None:
    if not cfg.augment:
        return None
    return Compose([RandomRot90Flip(generator), GaussianNoise(cfg.noise_std, generator)])


def train_epoch(model: SSPQTokenizer, patches: torch.Tensor, order: torch.Tensor, cfg: TokenizerConfig,
                optimizer: torch.optim.Optimizer, guard: StepGuard, device: torch.device,
                augment: Compose | None, desc: str) -> dict[str, float]:
    model.train()
    totals: dict[str, float] = {}
    seen = 0
    for start in progress(range(0, len(order), cfg.batch_size), desc):
        batch = patches[order[start:start + cfg.batch_size]]  # (n, B, S, S)
        if augment is not None:
            batch = torch.stack([augment(x) for x in batch])
        batch = batch.to(device)
        with autocast(device, cfg.amp):
            out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        guard.scaler.scale(out["loss"]).backward()
        guard.check(out["loss"], model.parameters())
        guard.step(optimizer)
        for key, value in out["loss_dict"].items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(batch)
        seen += len(batch)
    return {f"train_{key}": value / seen for key, value in totals.items()}


@torch.inference_mode()
def evaluate(model: SSPQTokenizer, patches: torch.Tensor, cfg: TokenizerConfig,
             device: torch.device) -> dict[str, float]:
    """Validation MSEs (fused from codes, fused from continuous latents, each branch) and code usage."""
    model.eval()
    sums = {"val_recon": 0.0, "val_recon_continuous": 0.0, "val_recon_spectral": 0.0, "val_recon_spatial": 0.0}
    spectral_ids, spatial_ids = [], []
    for start in range(0, len(patches), cfg.batch_size):
        batch = patches[start:start + cfg.batch_size].to(device)  # (n, B, S, S)
        with autocast(device, cfg.amp):
            out = model(batch, return_recon=True)
        for key, name in (("val_recon", "recon"), ("val_recon_continuous", "recon_continuous"),
                          ("val_recon_spectral", "recon_s"), ("val_recon_spatial", "recon_x")):
            sums[key] += float((out[name].float() - batch).pow(2).mean()) * len(batch)
        spectral_ids.append(out["spectral_ids"].cpu())
        spatial_ids.append(out["spatial_ids"].cpu())
    metrics = {key: value / len(patches) for key, value in sums.items()}
    for name, ids, size in (("spectral", spectral_ids, model.K_s), ("spatial", spatial_ids, model.K_x)):
        usage = codebook_usage(torch.cat(ids), size)
        metrics.update({f"{name}_perplexity": usage["perplexity"], f"{name}_usage": usage["usage"],
                        f"{name}_codes_used": usage["used"]})
    return metrics


def epoch_line(epoch: int, cfg: TokenizerConfig, metrics: dict[str, float], improved: bool) -> str:
    """One epoch's log line (under 140 characters, 160 with the log prefix); the checkpoint's `metrics` hold
    the rest (the spectral and spatial branches' errors, the share of codes in use)."""
    return (f"epoch {epoch + 1}/{cfg.num_epochs} {metrics['epoch_seconds']:.0f}s: loss {metrics['train_loss']:.4f}, "
            f"val recon {metrics['val_recon']:.5f} (continuous {metrics['val_recon_continuous']:.5f}), "
            f"code perplexity spectral {metrics['spectral_perplexity']:.0f} of {cfg.K_s}, "
            f"spatial {metrics['spatial_perplexity']:.0f} of {cfg.K_x}" + (" best" if improved else ""))


@interruptible("tokenizer")
def train_sspq_tokenizer(config_path: str | Path | None, overrides: list[str] | None = None,
                         resume: bool = False) -> Path:
    """Train Stage 1 from a YAML config (+ `key=value` overrides); returns the path of best.pth."""
    log = get_logger("tokenizer")
    cfg = load_config(TokenizerConfig, config_path, overrides)
    check_scene_entries(cfg.pretrain_datasets)
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    device = resolve_device(cfg.device)
    out_dir = Path(cfg.output_dir)
    best_path, last_path = out_dir / "best.pth", out_dir / "last.pth"
    lock_output_dir(out_dir)
    set_seed(cfg.seed)
    if resume and not last_path.is_file():  # before minutes of data loading
        raise CheckpointError(f"--resume: no {last_path} to resume from; run without --resume first")

    patches = load_patches(cfg, log)
    train_idx, val_idx = split_indices(len(patches), cfg.val_fraction, cfg.seed)
    val_patches = patches[val_idx]
    log.info(f"{len(train_idx)} train / {len(val_idx)} val patches of shape {tuple(patches.shape[1:])}; "
             f"token grid {cfg.grid_size}x{cfg.grid_size}, joint vocabulary {cfg.K_s * cfg.K_x}; device {device}")

    model = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = make_scaler(device, cfg.amp)
    start_epoch, best_val, best_epoch = 0, float("inf"), -1
    if resume:
        ckpt = load_checkpoint(last_path, "tokenizer")  # on the CPU: the RNG states must stay host tensors
        check_resume_config(ckpt["config"], to_dict(cfg), last_path, RESUMABLE_CHANGES)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start_epoch = ckpt["epoch"] + 1
        best_val, best_epoch = ckpt["metrics"]["best_val_recon"], ckpt["metrics"]["best_epoch"]
        log.info(f"resumed from {last_path} after epoch {ckpt['epoch'] + 1}")

    guard = StepGuard("tokenizer", scaler, last_path, log)
    for epoch in range(start_epoch, cfg.num_epochs):
        guard.begin_epoch(epoch)
        tic = time.perf_counter()
        epoch_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # data order + augmentation
        order = train_idx[torch.randperm(len(train_idx), generator=epoch_gen)]
        metrics = train_epoch(model, patches, order, cfg, optimizer, guard, device, _augment(cfg, epoch_gen),
                              desc=f"epoch {epoch + 1}/{cfg.num_epochs}")
        metrics.update(evaluate(model, val_patches, cfg, device))
        metrics["epoch_seconds"] = time.perf_counter() - tic
        improved = metrics["val_recon"] < best_val
        if improved:
            best_val, best_epoch = metrics["val_recon"], epoch
        metrics.update(best_val_recon=best_val, best_epoch=best_epoch)
        log.info(epoch_line(epoch, cfg, metrics, improved))
        state = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": None,
                 "scaler": scaler.state_dict(), "epoch": epoch, "rng": rng_state(), "metrics": metrics}
        if improved:
            save_checkpoint(best_path, "tokenizer", to_dict(cfg), **state)
        save_checkpoint(last_path, "tokenizer", to_dict(cfg), **state)
    log.info(f"best epoch {best_epoch + 1}: val recon {best_val:.6f} -> {best_path}")
    unlock_output_dir(out_dir)
    return best_path


def main(args: Any) -> None:
    train_sspq_tokenizer(args.config, scene_overrides(args.scenes, args.overrides, domains=False), resume=args.resume)


if __name__ == "__main__":
    run_main(main, ARGS)
