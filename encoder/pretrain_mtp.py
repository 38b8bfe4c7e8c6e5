"""Stage 2: cross-domain masked-token pre-training of HSIEncoderBERT on cached SSPQ token grids (spec 5.3).

    python encoder/pretrain_mtp.py --config configs/pretrain.yaml --tokenizer_ckpt checkpoints/tokenizer/best.pth
    python -m encoder.pretrain_mtp --config configs/pretrain.yaml --set pretrain_epochs=2
    torchrun --nproc_per_node=2 encoder/pretrain_mtp.py --config configs/pretrain_gpu.yaml      # DDP
    python encoder/pretrain_mtp.py --config configs/pretrain.yaml --resume                      # from last.pth
    python encoder/pretrain_mtp.py --scenes ../shared/data/had --tokenizer_ckpt ...   # these scenes, one domain each

1. The tokenizer checkpoint is loaded and frozen (eval, no gradients); preprocessing (num_bands,
   normalize, patch_size, stride) comes from ITS config. Every scene is tokenised once, in patches that
   lie inside the image (no mirrored pixels, which would show a masked pixel its own copy); the token
   grids and, with `spectral_input`, each token cell's prepared spectrum are cached in memory.
2. Each scene's grids are split by image rows: the bottom `val_fraction` of patch rows is held out
   for validation, and training patches overlapping those rows are dropped, so no held-out pixel is
   seen in training.
3. Training draws every domain equally often (`data.datasets.balanced_sampler`), masks with the
   encoder's strategy (a `blind_spot_share` of the rows with one block, the scoring family), hides each
   mask's guard ring (the tokenizer's spatial receptive radius) and optimises AdamW with linear
   warmup/decay; AMP on CUDA.
4. After every epoch: masked-token accuracy and perplexity per domain on the held-out grids under a
   fixed seeded mask, next to a context-free baseline (each domain's most frequent training token;
   unigram perplexity). The best mean validation NLL -> `{output_dir}/universal_hsi_encoder.pth`;
   `last.pth` (optimizer, scheduler, scaler) -> `--resume`.
Random streams (sampling, masks, dropout) are reseeded from (seed, epoch, rank) at each epoch start,
so a run resumed from `last.pth` (written at epoch ends) continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python encoder/pretrain_mtp.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from encoder.cli_args import pretrain_parser as build_parser  # imports neither torch nor transformers
from utils.cli import parse_cli, run_main

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from data.datasets import HSIPatchExtractor, balanced_sampler
from data.io import load_scene
from data.preprocess import mean_spectrum, prepare_cube
from data.scenes import scene_overrides
from encoder.config import PretrainConfig
from encoder.hsi_bert_encoder import HSIEncoderBERT
from sspq_tokenizer.checkpoint import load_tokenizer
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from sspq_tokenizer.scene_tokens import tokenize_windows
from utils.checkpoint import check_parent, check_resume_config, load_checkpoint, parent_record, save_checkpoint
from utils.config import load_config, to_dict
from utils.distributed import DistInfo, barrier, distributed_session, shard, wrap_ddp
from utils.errors import CheckpointError, ConfigError, DataError
from utils.interrupt import interruptible
from utils.logging import get_logger, progress
from utils.run_lock import lock_output_dir, unlock_output_dir
from utils.runtime import autocast, make_scaler, set_seed
from utils.step_guard import StepGuard

BEST_NAME = "universal_hsi_encoder.pth"
RESUMABLE_CHANGES = ("device",)  # may differ between an interrupted run and its --resume
LAST_NAME = "last.pth"
TOKENIZE_BATCH = 256
EVAL_BATCH = 256


@dataclass
class DomainGrids:
    """One scene's cached token grids."""

    name: str
    domain_id: int
    train: torch.Tensor  # (N_train, T) int64
    val: torch.Tensor  # (N_val, T) int64
    train_spectra: torch.Tensor | None  # (N_train, T, B) float16 cell spectra, or None without spectral_input
    val_spectra: torch.Tensor | None  # (N_val, T, B) float16
    mean_spectrum: list[float] | None = None  # (B,) mean prepared spectrum: Stage 3's `domain_id: auto` matches it


def split_by_rows(coords: np.ndarray, patch_size: int, val_fraction: float, name: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) bool (N,) over patches: val = the bottom val_fraction of patch rows; train = patches
    lying wholly above them."""
    rows = np.unique(coords[:, 0])
    cut = rows[-max(1, round(len(rows) * val_fraction))]
    val = coords[:, 0] >= cut
    train = coords[:, 0] + patch_size <= cut
    if not train.any():
        raise DataError(f"pretrain_datasets '{name}': too few image rows to hold out val_fraction={val_fraction} "
                        f"of {len(rows)} patch rows with {patch_size}-pixel patches; lower val_fraction")
    return train, val


def tokenize_scenes(cfg: PretrainConfig, tokenizer: SSPQTokenizer, tok_cfg: dict[str, Any],
                    device: torch.device, log: logging.Logger | None = None) -> list[DomainGrids]:
    """Tokenise every scene of cfg.pretrain_datasets once, with the tokenizer checkpoint's preprocessing,
    in patches inside the image; keeps the cells' spectra too when cfg.spectral_input. With `log`, shows
    its progress (a bar on a terminal, else a line per 10% of the scenes)."""
    extractor = HSIPatchExtractor(tok_cfg["patch_size"], tok_cfg["stride"])
    grids = []
    for entry in progress(cfg.pretrain_datasets, "tokenising scenes", log=log, show=log is not None):
        scene = load_scene(entry.data_path, entry.cube_key, entry.gt_key, entry.gt_path, entry.cube_layout)
        cube = prepare_cube(scene.cube, tok_cfg["num_bands"], tok_cfg["normalize"], scene.wavelengths,
                            source=entry.data_path, valid=scene.valid)  # (H, W, B)
        try:
            coords = extractor.with_data(extractor.inside_coords(*cube.shape[:2]), scene.valid)  # (N, 2)
        except DataError as err:
            raise DataError(f"pretrain_datasets '{entry.name}': {err}") from None
        if len(coords) == 0:
            raise DataError(f"pretrain_datasets '{entry.name}': no window of {entry.data_path} is free of no-data "
                            f"pixels")
        tokens, spectra = tokenize_windows(tokenizer, cube, coords, None, TOKENIZE_BATCH, device,
                                           torch.float16 if cfg.spectral_input else None)  # (N, T), (N, T, B)
        train, val = (torch.from_numpy(m) for m in split_by_rows(coords, extractor.patch_size, cfg.val_fraction,
                                                                 entry.name))
        grids.append(DomainGrids(entry.name, entry.domain_id, tokens[train], tokens[val],
                                 None if spectra is None else spectra[train], None if spectra is None else spectra[val]))
        grids[-1].mean_spectrum = mean_spectrum(cube, valid=scene.valid).tolist()  # (B,) of the prepared cube
    return grids


def unigram_baseline(train: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """Context-free baseline: predict the domain's most frequent training token; unigram NLL (add-1/2)."""
    counts = torch.bincount(train.reshape(-1), minlength=vocab_size).double()  # (V,)
    log_p = ((counts + 0.5) / (counts.sum() + 0.5 * vocab_size)).log()  # (V,)
    acc = float((targets == counts.argmax()).double().mean())
    nll = float(-log_p[targets].mean())
    return {"baseline_acc": acc, "baseline_nll": nll, "baseline_ppl": math.exp(nll)}


@torch.no_grad()
def evaluate(encoder: HSIEncoderBERT, grids: list[DomainGrids], val_masks: list[torch.Tensor],
             device: torch.device, amp: bool) -> dict[str, Any]:
    """Per-domain masked-token accuracy / NLL / perplexity on the held-out grids, with baselines."""
    was_training = encoder.training
    encoder.eval()
    per_domain = {}
    for grid, mask in zip(grids, val_masks):
        correct, nll_sum, spec_sum = 0, 0.0, 0.0
        for first in range(0, len(grid.val), EVAL_BATCH):
            tokens = grid.val[first:first + EVAL_BATCH].to(device)  # (n, T)
            batch_mask = mask[first:first + EVAL_BATCH].to(device)  # (n, T)
            spectra = None if grid.val_spectra is None else grid.val_spectra[first:first + EVAL_BATCH].to(device).float()
            domains = torch.full((len(tokens),), grid.domain_id, dtype=torch.long, device=device)  # (n,)
            with autocast(device, amp):
                _, logits, hidden = encoder(tokens, domains, pretrain=True, mask=batch_mask, spectra=spectra)
            targets = tokens[batch_mask]  # (M,)
            correct += int((logits.argmax(dim=1) == targets).sum())
            nll_sum += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
            if spectra is not None:
                visible = encoder.blind_inputs(tokens, batch_mask, spectra)[1]
                spec_sum += float(encoder.spectrum_loss(hidden[batch_mask], batch_mask, spectra, visible)) * int(batch_mask.sum())
        count = int(mask.sum())
        nll = nll_sum / count
        per_domain[grid.name] = {"acc": correct / count, "nll": nll, "ppl": math.exp(nll), "masked": count,
                                 **unigram_baseline(grid.train, grid.val[mask], encoder.joint_vocab_size)}
        if grid.val_spectra is not None:  # normalised squared error of the predicted spectra (1 = constant guess)
            per_domain[grid.name]["spectrum_nmse"] = spec_sum / count
    encoder.train(was_training)
    spectrum = [m["spectrum_nmse"] for m in per_domain.values() if "spectrum_nmse" in m]
    return {"val_nll": float(np.mean([m["nll"] for m in per_domain.values()])),
            "val_spectrum_nmse": float(np.mean(spectrum)) if spectrum else None,
            "val_acc": float(np.mean([m["acc"] for m in per_domain.values()])),
            "baseline_acc": float(np.mean([m["baseline_acc"] for m in per_domain.values()])),
            "per_domain": per_domain}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not on biases / LayerNorm); frozen tables left out."""
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else plain).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def epoch_batches(grids: list[DomainGrids], steps: int, batch_size: int, epoch: int, seed: int,
                  dist: DistInfo) -> list[torch.Tensor]:
    """This rank's `steps` index batches (b,) into the concatenated training grids, domains balanced."""
    domains = np.concatenate([np.full(len(g.train), g.domain_id) for g in grids])  # (N,)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    drawn = list(balanced_sampler(domains, steps * batch_size * dist.world_size, generator))
    mine = torch.tensor(shard(drawn, dist), dtype=torch.long)  # DistributedSampler-style share
    return list(mine.view(steps, batch_size))


@interruptible("encoder")
def pretrain_universal_hsi(config_path: str | Path | None, overrides: list[str] | None = None,
                           tokenizer_ckpt: str | Path | None = None, resume: bool = False) -> Path:
    """Run Stage 2; returns the path of the best encoder checkpoint."""
    extra = [f"tokenizer_ckpt={tokenizer_ckpt}"] if tokenizer_ckpt is not None else []
    cfg = load_config(PretrainConfig, config_path, list(overrides or []) + extra)
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    with distributed_session(cfg.device) as dist:
        return _pretrain(cfg, dist, resume)


def _pretrain(cfg: PretrainConfig, dist: DistInfo, resume: bool) -> Path:
    log = get_logger("pretrain")
    info = log.info if dist.is_main else (lambda *args: None)
    device = dist.device
    out_dir = Path(cfg.output_dir)
    best_path, last_path = out_dir / BEST_NAME, out_dir / LAST_NAME
    if dist.is_main:
        lock_output_dir(out_dir)
    set_seed(cfg.seed)
    if resume and not last_path.is_file():  # before the scenes are tokenised
        raise CheckpointError(f"--resume: no {last_path} to resume from; run without --resume first")

    tokenizer, tok_ckpt = load_tokenizer(cfg.tokenizer_ckpt)
    tokenizer = tokenizer.to(device).requires_grad_(False)
    if any(p.requires_grad for p in tokenizer.parameters()):
        raise RuntimeError("the tokenizer must be frozen in Stage 2")
    tok_cfg = tok_ckpt["config"]
    start = time.perf_counter()
    # cached once; the grid size sizes the encoder
    grids = tokenize_scenes(cfg, tokenizer, tok_cfg, device, log if dist.is_main else None)
    num_tokens = grids[0].train.shape[1]
    info(f"tokenised {len(grids)} scenes in {time.perf_counter() - start:.1f}s: "
         + ", ".join(f"{g.name}={len(g.train)}+{len(g.val)}" for g in grids) + f" grids of {num_tokens} tokens")
    if num_tokens > cfg.max_seq_len:
        raise ConfigError(f"max_seq_len {cfg.max_seq_len} is smaller than the tokenizer's {num_tokens} tokens "
                          f"per patch; raise max_seq_len")
    grid_size = tokenizer.grid_size if tokenizer.grid_size ** 2 == num_tokens else None
    if grid_size is None and cfg.mask_strategy == "structured":
        raise ConfigError(f"mask_strategy structured needs a square token grid, but {cfg.tokenizer_ckpt} gives "
                          f"{num_tokens} tokens per patch; use mask_strategy: random")
    if tokenizer.spectral_vqvae.token_mode != "grid":
        raise ConfigError(f"{cfg.tokenizer_ckpt}: spectral_tokens '{tokenizer.spectral_vqvae.token_mode}' codes one "
                          f"spectrum per patch, which sees every masked pixel: the blind spot needs spectral_tokens: grid")

    encoder = HSIEncoderBERT(
        joint_vocab_size=tokenizer.joint_vocab_size, num_domains=cfg.num_domains,
        bert_model_name_or_path=cfg.bert_model_name_or_path, load_pretrained_lm=cfg.load_pretrained_lm,
        mask_ratio=cfg.mask_ratio, max_seq_len=cfg.max_seq_len, grid_size=grid_size, bert_config=cfg.bert_config,
        mask_strategy=cfg.mask_strategy, spectral_codebook_size=tokenizer.K_s,
        spectral_mask_share=cfg.spectral_mask_share,
        spectral_input_dim=tokenizer.num_bands if cfg.spectral_input else 0,
        guard_radius=tokenizer.spatial_vqvae.guard_radius, blind_spot_share=cfg.blind_spot_share,
        max_block=cfg.max_block, spectrum_weight=cfg.spectrum_weight).to(device)
    if encoder.reinitialised_keys:
        info(f"loaded the transformer body of {cfg.bert_model_name_or_path}; newly initialised: "
             + ", ".join(encoder.reinitialised_keys))
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    info(f"encoder: hidden {encoder.hidden_size}, {encoder.arch['num_hidden_layers']} layers, "
         f"{trainable:,} trainable parameters, vocabulary {encoder.joint_vocab_size}, device {device}, "
         f"world size {dist.world_size}")

    val_gen = torch.Generator().manual_seed(cfg.seed)
    val_masks = [encoder.sample_mask(g.val, val_gen) for g in grids]  # fixed: every evaluation sees the same
    steps = cfg.steps_per_epoch or math.ceil(sum(len(g.train) for g in grids)
                                             / (cfg.pretrain_batch_size * dist.world_size))
    total_steps = steps * cfg.pretrain_epochs
    if cfg.num_warmup_steps >= total_steps:
        raise ConfigError(f"num_warmup_steps {cfg.num_warmup_steps} >= the {total_steps} training steps "
                          f"(pretrain_epochs x {steps} steps per epoch): lower num_warmup_steps")
    ddp_model = wrap_ddp(encoder, dist)
    optimizer = torch.optim.AdamW(param_groups(encoder, cfg.weight_decay), lr=cfg.learning_rate_pretrain)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.num_warmup_steps, total_steps)
    scaler = make_scaler(device, cfg.amp)
    parent = parent_record(cfg.tokenizer_ckpt)
    config_dict = {**to_dict(cfg), "encoder_args": encoder.encoder_args()}
    domains = {g.name: g.domain_id for g in grids}
    domain_spectra = {g.name: g.mean_spectrum for g in grids}  # name -> (B,) mean prepared spectrum

    all_tokens = torch.cat([g.train for g in grids])  # (N, T)
    all_spectra = torch.cat([g.train_spectra for g in grids]) if cfg.spectral_input else None  # (N, T, B) fp16
    all_domains = torch.cat([torch.full((len(g.train),), g.domain_id, dtype=torch.long) for g in grids])  # (N,)
    first_epoch, step, best_nll, best_metrics, history = 0, 0, math.inf, None, []
    if resume:
        last = load_checkpoint(last_path, "encoder", map_location=device)
        check_parent(last, last_path, cfg.tokenizer_ckpt)
        check_resume_config({k: v for k, v in last["config"].items() if k != "encoder_args"}, to_dict(cfg), last_path,
                            RESUMABLE_CHANGES)
        encoder.load_state_dict(last["state_dict"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        scaler.load_state_dict(last["scaler"])
        first_epoch, step = last["epoch"] + 1, last["step"]
        best_nll, best_metrics, history = last["best_val_nll"], last["best_metrics"], last["metrics"]["history"]
        info(f"resumed from {last_path} after epoch {last['epoch'] + 1} (step {step})")
        if first_epoch >= cfg.pretrain_epochs:
            raise ConfigError(f"--resume: {last_path} already finished all {cfg.pretrain_epochs} epochs")

    elif dist.is_main:  # the untrained encoder's validation scores: the reference the history starts from
        initial = evaluate(encoder, grids, val_masks, device, cfg.amp)
        history.append({"epoch": 0, "val_nll": initial["val_nll"], "val_acc": initial["val_acc"]})
        info(f"untrained: val nll {initial['val_nll']:.3f}, val acc {initial['val_acc']:.3f} "
             f"(context-free baseline {initial['baseline_acc']:.3f})")

    guard = StepGuard("encoder", scaler, last_path, log)
    for epoch in range(first_epoch, cfg.pretrain_epochs):
        guard.begin_epoch(epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + dist.rank)  # dropout stream
        mask_gen = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch * 1_009 + dist.rank)
        batches = epoch_batches(grids, steps, cfg.pretrain_batch_size, epoch, cfg.seed, dist)
        ddp_model.train()
        loss_sum, tic = 0.0, time.perf_counter()
        bar = progress(batches, f"epoch {epoch + 1}/{cfg.pretrain_epochs}", show=dist.is_main)
        for index in bar:
            tokens, domain_ids = all_tokens[index].to(device), all_domains[index].to(device)  # (b, T), (b,)
            spectra = None if all_spectra is None else all_spectra[index].to(device).float()  # (b, T, B)
            with autocast(device, cfg.amp):
                loss, _, _ = ddp_model(tokens, domain_ids, pretrain=True, generator=mask_gen, spectra=spectra)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            guard.check(loss, encoder.parameters())
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), cfg.max_grad_norm)
            guard.step(optimizer)
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            loss_sum += loss_value
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
        bar.close()
        steps_per_s = steps / (time.perf_counter() - tic)
        if dist.is_main:
            metrics = evaluate(encoder, grids, val_masks, device, cfg.amp)
            history.append({"epoch": epoch + 1, "val_nll": metrics["val_nll"], "val_acc": metrics["val_acc"]})
            metrics.update(epoch=epoch + 1, step=step, train_loss=loss_sum / steps, steps_per_s=steps_per_s,
                           world_size=dist.world_size, history=list(history))
            info(f"epoch {epoch + 1}: train loss {metrics['train_loss']:.3f}, val nll {metrics['val_nll']:.3f}, "
                 f"val acc {metrics['val_acc']:.3f} (context-free baseline {metrics['baseline_acc']:.3f}), "
                 + (f"val spectrum nmse {metrics['val_spectrum_nmse']:.3f} (1 = the constant guess), "
                    if metrics["val_spectrum_nmse"] is not None else "") + f"{steps_per_s:.1f} steps/s")
            state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
            common = dict(encoder_args=encoder.encoder_args(), domains=domains, parent=parent, step=step,
                          epoch=epoch, domain_spectra=domain_spectra)
            if metrics["val_nll"] < best_nll:
                best_nll, best_metrics = metrics["val_nll"], metrics
                save_checkpoint(best_path, "encoder", config_dict, state, metrics=metrics, **common)
                info(f"wrote {best_path}")
            save_checkpoint(last_path, "encoder", config_dict, state, metrics=metrics, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), best_val_nll=best_nll,
                            best_metrics=best_metrics, **common)
        barrier(dist)

    info(f"best encoder: {best_path}")
    if dist.is_main:
        for name, m in best_metrics["per_domain"].items():
            info(f"best (epoch {best_metrics['epoch']}) {name}: acc {m['acc']:.3f} vs baseline {m['baseline_acc']:.3f}, "
                 f"ppl {m['ppl']:.1f} vs {m['baseline_ppl']:.1f}")
    unlock_output_dir(out_dir)
    return best_path


def main(args) -> None:
    pretrain_universal_hsi(args.config, scene_overrides(args.scenes, args.overrides), args.tokenizer_ckpt, args.resume)


if __name__ == "__main__":
    run_main(main, ARGS)
