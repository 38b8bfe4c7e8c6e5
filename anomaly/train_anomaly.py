"""Stage 3 training (spec 6.3): fit the anomaly heads (and optional LoRA adapters) on the target scene.

    python anomaly/train_anomaly.py --config configs/anomaly.yaml \
        --encoder_ckpt checkpoints/encoder/universal_hsi_encoder.pth [--data_path scene.npz]
    python -m anomaly.train_anomaly ...                                # the same
    python anomaly/train_anomaly.py ... --resume                       # continue from <output_dir>/last.pth

Unsupervised by default (docs/design.md "Labels never in the score"): Deep SVDD on the target scene's own patches, no labels read.
`supervised: true` trains the one-class head with BCE on `supervised_data_path`, a labelled scene that
must differ from the scored scene (`data_path`); scoring the training scene itself is refused.
Writes `<output_dir>/anomaly_detector.pth` (config + trained head / adapter weights + the encoder
checkpoint's path and sha256; the tokenizer and encoder are rebuilt from their own checkpoints). `output_dir`
left empty (the default) is `checkpoints/anomaly/<scene name>`: one folder per scored scene, so training on
scene B keeps scene A's detector (anomaly/run_folders.py); a given `output_dir` is used as it is.
When something trains, `<output_dir>/last.pth` (trained state, optimizer, GradScaler, epoch, loss history) is
written after every epoch for `--resume`. The shuffle and the global torch stream (LoRA dropout and masks)
are reseeded from (seed, epoch) at each epoch start, so a resumed run ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python anomaly/train_anomaly.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anomaly.cli_args import train_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import numpy as np  # noqa: E402
import torch  # noqa: E402

from anomaly import objective  # noqa: E402
from anomaly.adapt import fit_to_scene, scene_windows  # noqa: E402
from anomaly.checkpoint import ModelLoader, load_universal_model  # noqa: E402
from anomaly.config import AnomalyConfig, load_anomaly_config  # noqa: E402
from anomaly.detector import HSIAnomalyDetector  # noqa: E402
from anomaly.heads import code_log_frequencies  # noqa: E402
from anomaly.settings import same_scene  # noqa: E402
from anomaly.run_folders import CKPT_NAME, detector_dir, encoder_or_release  # noqa: E402
from data.datasets import HSIPatchExtractor  # noqa: E402
from data.io import Scene, load_scene  # noqa: E402
from data.blocks import NoDataRows  # noqa: E402
from data.preprocess import SpectralPreprocessor  # noqa: E402
from data.product import check_valid  # noqa: E402
from encoder.hsi_bert_encoder import UniversalHSIModel  # noqa: E402
from utils.checkpoint import check_parent, check_resume_config, load_checkpoint, save_checkpoint  # noqa: E402
from utils.config import to_dict  # noqa: E402
from utils.errors import CheckpointError, ConfigError, DataError  # noqa: E402
from utils.interrupt import interruptible  # noqa: E402
from utils.logging import get_logger  # noqa: E402
from utils.run_lock import lock_output_dir, unlock_output_dir  # noqa: E402
from utils.runtime import autocast, make_scaler, resolve_device, set_seed  # noqa: E402
from utils.step_guard import StepGuard  # noqa: E402

LAST_NAME = "last.pth"
RESUMABLE_CHANGES = ("anomaly_epochs", "device")  # may differ between an interrupted run and its --resume
EMBEDDING_CACHE_BYTES = 512 << 20  # the most the one-class head's cached training embeddings may take
ADAPT_BATCH = 32  # windows per adaptation step (the pre-training batch of configs/pretrain.yaml)
log = get_logger("anomaly")


# ---------------------------------------------------------------------- training
def _training_tokens(cfg: AnomalyConfig, detector: HSIAnomalyDetector, scene: Scene, prep: SpectralPreprocessor,
                     patch_size: int, stride: int, supervised: bool, device: torch.device,
                     valid: np.ndarray | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Joint ids (N, T) of the training scene's patches, and their gt patches (N, S, S) when supervised.

    The tokenizer is frozen, so the patches are tokenised once: they stream through it batch by batch
    (prepared on the fly) and only their ids are kept, so memory does not grow with the scene's bands.
    `max_train_patches` picks a fixed random subset of the patch positions before any patch is read. With a no-data
    mask (`valid` (H, W)) only patches free of no-data pixels train.
    """
    extractor = HSIPatchExtractor(patch_size, stride)
    coords = extractor.with_data(extractor.coords(*scene.cube.shape[:2]), valid)  # (N, 2)
    if len(coords) == 0:
        raise DataError(f"{scene.name}: no {patch_size} x {patch_size} patch is free of no-data pixels")
    if cfg.max_train_patches and cfg.max_train_patches < len(coords):
        keep = torch.randperm(len(coords), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.max_train_patches]
        coords = coords[keep.numpy()]
    joint_ids = torch.cat([detector.tokenize(torch.from_numpy(patches).to(device)).cpu()
                           for patches, _ in extractor.iter_batches(
                               scene.cube if valid is None else NoDataRows(scene.cube, valid),
                               cfg.inference_batch_size, prep.transform, coords)])  # (N, T)
    gt = None
    if supervised:
        gt = torch.from_numpy(extractor.gather(scene.gt.astype(np.float32)[..., None], coords)[..., 0])  # (N, S, S)
    return joint_ids, gt


def _embedding_cache(detector: HSIAnomalyDetector, cfg: AnomalyConfig, joint_ids: torch.Tensor,
                     batches: Callable[[], Any]) -> torch.Tensor | None:
    """The one-class head's inputs (N, T, H) on the CPU, computed once: the frozen (or already fitted) encoder gives
    every epoch the same embeddings (in eval mode, as scoring sees them). None when there is no one-class head, or
    when they exceed EMBEDDING_CACHE_BYTES (then each batch's are computed again, also in eval mode)."""
    if detector.one_class_head is None:
        return None
    size = joint_ids.numel() * detector.universal_model.encoder.hidden_size * 4
    if size > EMBEDDING_CACHE_BYTES:
        log.info(f"one-class embeddings of {len(joint_ids)} patches ({size >> 20} MiB) exceed the "
                 f"{EMBEDDING_CACHE_BYTES >> 20} MiB cache: computed again for each batch")
        return None
    return torch.cat([objective.embeddings(detector, ids, d).float().cpu() for ids, d in batches()])  # (N, T, H)


def adapt_to_scene(cfg: AnomalyConfig, model: UniversalHSIModel, target: Scene, prep: SpectralPreprocessor | None,
                   detector: HSIAnomalyDetector, stride: int, domain_id: int, device: torch.device,
                   valid: np.ndarray | None = None) -> list[float]:
    """`adapt_steps` label-free steps of the pre-training objective fitting the scene's domain row (and the LoRA
    adapters under use_lora) on its own windows `stride` pixels apart (anomaly/adapt.py); `prep` None = fit the
    target's own preprocessing. Returns the step losses ([] without a fit)."""
    if cfg.adapt_steps == 0:
        return []
    if model.encoder.spectral_input_dim == 0:
        raise ConfigError(f"adapt_steps: {cfg.adapt_steps}, but the encoder {cfg.encoder_ckpt} was pre-trained without "
                          f"spectral_input; set adapt_steps: 0 or re-run Stage 2 with spectral_input: true")
    tic = time.time()
    prep = prep or detector.prepare(target.cube, target.wavelengths, cfg.data_path, valid)
    cube = target.cube if valid is None else NoDataRows(target.cube, valid)
    ids, spectra = scene_windows(model.tokenizer, cube, prep.transform, stride, cfg.inference_batch_size, device,
                                 valid)  # (N, T), (N, T, B)
    losses = fit_to_scene(model.encoder, ids, spectra, domain_id, cfg.adapt_steps, cfg.adapt_lr, ADAPT_BATCH, cfg.seed)
    tail = losses[-max(1, len(losses) // 10):]
    fitted = f"domain {domain_id}" + (" and LoRA adapters" if cfg.use_lora else "")
    log.info(f"fitted {fitted} to {target.name}: {cfg.adapt_steps} steps on {len(ids)} windows, loss "
             f"{losses[0]:.3f} -> {sum(tail) / len(tail):.3f} (mean of the last tenth), {time.time() - tic:.1f} s")
    return losses


def _fit_heads(cfg: AnomalyConfig, detector: HSIAnomalyDetector, params: list[torch.Tensor], trains: bool,
               train_scene: Scene, prep: SpectralPreprocessor, tok_cfg: dict[str, Any], supervised: bool,
               domain_choice, last: dict[str, Any] | None, last_path: Path, config: dict[str, Any],
               info: dict[str, Any], adapt_losses: list[float], device: torch.device,
               valid: np.ndarray | None) -> list[float]:
    """Tokenise the training scene once (its patches free of no-data pixels, `valid`), set the code frequencies and
    the one-class centre, and train the one-class head for `anomaly_epochs`, writing `last_path` after every epoch;
    returns the loss history."""
    patch_size = int(tok_cfg["patch_size"])
    joint_ids, gt = _training_tokens(cfg, detector, train_scene, prep, patch_size, int(tok_cfg["stride"]),
                                     supervised, device, valid)  # (N, T), (N, S, S) | None
    log.info(f"{'supervised (BCE on ' + train_scene.name + ')' if supervised else 'unsupervised'} training: "
             f"{len(joint_ids)} patches of {patch_size}x{patch_size} pixels, heads {detector.head_weights}, "
             f"trainable parameters {detector.trainable_parameter_count()}")
    bs = cfg.anomaly_batch_size
    domain = torch.tensor(domain_choice.domain_id, dtype=torch.long)

    def batches(shuffle: torch.Generator | None = None):
        order = torch.randperm(len(joint_ids), generator=shuffle) if shuffle is not None else torch.arange(len(joint_ids))
        for first in range(0, len(order), bs):
            idx = order[first:first + bs]
            yield (idx, joint_ids[idx].to(device), domain.expand(len(idx)).to(device),
                   None if gt is None else gt[idx].to(device))

    if last is not None:  # heads (with the SVDD centre), code frequencies, adapters, fitted domain row: before the
        detector.load_trained_state_dict(last["state_dict"])  # embeddings below, which depend on the last two
    cache = _embedding_cache(detector, cfg, joint_ids, lambda: ((ids, d) for _, ids, d, _ in batches()))

    def embeddings(idx, ids, d):  # (n, T, H) of a batch while the encoder stays fixed; None without a head
        if detector.one_class_head is None:
            return None
        return cache[idx].to(device) if cache is not None else objective.embeddings(detector, ids, d)

    if last is None:
        if "rarity" in detector.head_weights:
            counts = torch.bincount(detector.spectral_codes(joint_ids).reshape(-1),
                                    minlength=detector.universal_model.tokenizer.K_s)
            detector.code_log_freq.copy_(code_log_frequencies(counts).to(device))
        if detector.one_class_head is not None and not supervised:
            objective.center_from(detector, [cache] if cache is not None else
                                  (objective.embeddings(detector, ids, d) for _, ids, d, _ in batches()))
    history: list[float] = []
    if not trains:
        return history
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate_anomaly, weight_decay=cfg.one_class.weight_decay)
    scaler = make_scaler(device, cfg.amp)
    first_epoch = 0
    if last is not None:
        optimizer.load_state_dict(last["optimizer"])
        scaler.load_state_dict(last["scaler"])
        first_epoch, history = last["epoch"] + 1, list(last["metrics"]["loss_history"])
        log.info(f"resumed from {last_path} after epoch {first_epoch}")
    detector.train()
    guard = StepGuard("anomaly", scaler, last_path, log)
    for epoch in range(first_epoch, cfg.anomaly_epochs):
        guard.begin_epoch(epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1_009)  # whatever draws random numbers in the step
        shuffle = torch.Generator().manual_seed(cfg.seed * 7_919 + epoch)
        total, count = 0.0, 0
        for idx, ids, d, g in batches(shuffle):
            labels = None if g is None else objective.target_labels(detector, g)
            with autocast(device, cfg.amp):
                losses = objective.training_losses(detector, ids, d, labels, hidden=embeddings(idx, ids, d))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            guard.check(losses["loss"], params)
            guard.step(optimizer)
            total += float(losses["loss"].detach()) * len(ids)
            count += len(ids)
        history.append(total / count)
        log.info(f"epoch {epoch + 1}/{cfg.anomaly_epochs}: loss {history[-1]:.5f}")
        save_checkpoint(last_path, "anomaly", config, detector.trained_state_dict(), parent=info["encoder"],
                        tokenizer=info["tokenizer"], optimizer=optimizer.state_dict(),
                        scaler=scaler.state_dict(), epoch=epoch,
                        metrics={"loss_history": list(history), "adapt_losses": adapt_losses})
    detector.train(False)
    return history


def load_last(cfg: AnomalyConfig, path: Path) -> dict[str, Any]:
    """`path` (last.pth) for --resume: written with this config, with epochs left to train (the caller checks
    its encoder by sha256 once the encoder is known to exist)."""
    if not path.is_file():
        raise CheckpointError(f"--resume: no {path} to resume from; run without --resume first")
    last = load_checkpoint(path, "anomaly")
    check_resume_config(last["config"]["anomaly"], to_dict(cfg), path, RESUMABLE_CHANGES)
    done = last["epoch"] + 1
    if done >= cfg.anomaly_epochs:
        raise ConfigError(f"--resume: {path} already finished epoch {done} and anomaly_epochs is {cfg.anomaly_epochs}: "
                          f"nothing left to train; raise anomaly_epochs to train on, or start afresh without --resume")
    return last


@interruptible("anomaly")
def train_anomaly_detector(config_path: str | None, overrides: list[str] | None = None,
                           encoder_ckpt: str | None = None, data_path: str | None = None, *,
                           resume: bool = False, load_models: ModelLoader = load_universal_model) -> Path:
    """Spec 6.3: read the config, fit the detector on the target scene, write anomaly_detector.pth;
    `resume` continues from <output_dir>/last.pth (output_dir "" = checkpoints/anomaly/<scene name>);
    `load_models` reads the encoder (anomaly/model_cache.py keeps it loaded between scenes)."""
    cfg = load_anomaly_config(config_path, overrides, encoder_ckpt=encoder_ckpt, data_path=data_path)
    cfg = replace(cfg, encoder_ckpt=str(encoder_or_release(cfg.encoder_ckpt)))
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out_dir = detector_dir(cfg.output_dir, cfg.data_path)
    lock_output_dir(out_dir)
    last_path = out_dir / LAST_NAME
    last = load_last(cfg, last_path) if resume else None  # before the models and the scene are loaded
    start = time.time()
    model, info = load_models(cfg.encoder_ckpt, device)
    if last is not None:
        check_parent(last, last_path, cfg.encoder_ckpt, info["encoder"])
    tok_cfg = info["tokenizer_config"]
    target = load_scene(cfg.data_path, cfg.cube_key, cfg.gt_key, cfg.gt_path, cfg.cube_layout)
    supervised = cfg.supervised
    if supervised:
        train_scene = load_scene(cfg.supervised_data_path)
        if same_scene(train_scene, cfg.supervised_data_path, target, cfg.data_path):
            raise ConfigError(f"supervised_data_path {cfg.supervised_data_path} is the scored scene {cfg.data_path}: "
                              f"labels of the scored scene never train the detector; train on "
                              f"another labelled scene, or set supervised: false")
        if train_scene.gt is None or not (0 < int(train_scene.gt.sum()) < train_scene.gt.size):
            raise DataError(f"{cfg.supervised_data_path}: supervised training needs a gt mask with both "
                            f"anomaly and background pixels")
    else:
        train_scene = target
    detector = HSIAnomalyDetector.from_parts(cfg, model, info, supervised).to(device)
    params = [p for p in detector.parameters() if p.requires_grad]
    trains = bool(params) and cfg.anomaly_epochs > 0
    # the scene's tokens feed the code frequencies, the one-class centre and training; without them nothing reads it
    needs_tokens = trains or "rarity" in detector.head_weights or detector.one_class_head is not None
    train_path = cfg.supervised_data_path if supervised else cfg.data_path
    target_valid = check_valid(target.valid, target.cube.shape[:2], cfg.data_path)
    train_valid = check_valid(train_scene.valid, train_scene.cube.shape[:2], train_path) if supervised else target_valid
    prep = detector.prepare(train_scene.cube, train_scene.wavelengths, train_path, train_valid) if needs_tokens or (
        cfg.adapt_steps > 0 and last is None) else None
    domain_choice = detector.choose_domain(cfg.domain_id, target.cube, target.name, None if supervised else prep,
                                           target_valid, target.wavelengths, cfg.data_path)
    log.info(f"{target.name}: {domain_choice.describe()}")
    if last is None:
        adapt_losses = adapt_to_scene(cfg, model, target, prep if not supervised else None, detector,
                                      int(tok_cfg["stride"]), domain_choice.domain_id, device, target_valid)
    else:  # the adapted domain row is part of the trained state loaded below
        adapt_losses = last["metrics"]["adapt_losses"]
    config = {"anomaly": to_dict(cfg), "objective": "bce" if supervised else "svdd", "train_scene": train_scene.name,
              "domain": domain_choice.as_dict(), "train_data_path": train_path,
              "preprocessing": {k: tok_cfg[k] for k in ("num_bands", "normalize", "patch_size", "stride")}}
    if needs_tokens:
        history = _fit_heads(cfg, detector, params, trains, train_scene, prep, tok_cfg, supervised, domain_choice,
                             last, last_path, config, info, adapt_losses, device, train_valid)
    else:
        history = []
        log.info("nothing to train (no one-class head, or anomaly_epochs: 0) and no head reads the scene's tokens: "
                 "the checkpoint holds the settings (and any scene fit)")
    path = out_dir / CKPT_NAME
    save_checkpoint(
        path, "anomaly", config, detector.trained_state_dict(), parent=info["encoder"], tokenizer=info["tokenizer"],
        epoch=cfg.anomaly_epochs, metrics={"loss_history": history, "adapt_losses": adapt_losses,
                                           "train_seconds": time.time() - start,
                                           "trainable_parameters": detector.trainable_parameter_count()})
    unlock_output_dir(out_dir)
    log.info(f"wrote {path} ({time.time() - start:.1f} s)")
    return path


def main(args) -> None:
    train_anomaly_detector(args.config, args.overrides, args.encoder_ckpt, args.data_path, resume=args.resume)


if __name__ == "__main__":
    run_main(main, ARGS)
