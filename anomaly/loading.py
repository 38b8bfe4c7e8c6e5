"""Rebuilding Stage 3's models and scenes: the checkpoint chain, the detector, a scene's preprocessing and domain.

    model, info = load_universal_model("checkpoints/encoder/universal_hsi_encoder.pth", device)
    detector, trained, ckpt, info = load_detector("checkpoints/anomaly/synthetic/anomaly_detector.pth", device, run)
    prep = fit_preprocessor(scene, info["tokenizer_config"], path)
    domain = resolve_domain(trained.domain_id, scene, info, path, prep)

The chain detector -> encoder -> tokenizer is checked by sha256 at every link. A detector file exported with
its parents inside (anomaly/export_detector.py) is read from those embedded copies, checked the same way.

Settings at inference (`load_detector(..., overrides, run_file)`): the trained config defines the model. A
`--set` override of what can change without retraining is applied and logged (the fusion weights of heads that
need no trained weights, the normalisation, the local RX window, the blind-spot block and phases, the patch
stride, the domain unless the scene's row was adapted); one of what cannot is refused, naming the key and the
checkpoint. Where the run's config file differs from the trained settings, the trained ones are used and one
WARNING lists the differences with the `--set` that would apply them. Keys that only steer training (epochs,
learning rates, output_dir, ...) are not compared.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomaly.blind_spot import CONTEXT_HEADS
from anomaly.config import AnomalyConfig
from anomaly.detector import HSIAnomalyDetector
from anomaly.domain import DomainChoice, choose_domain
from data.io import Scene
from data.preprocess import SpectralPreprocessor, iter_row_chunks, mean_spectrum
from encoder.checkpoint import load_encoder
from encoder.hsi_bert_encoder import UniversalHSIModel
from sspq_tokenizer.checkpoint import load_tokenizer
from utils.atomic import write_files
from utils.checkpoint import (check_parent, describe_load_error, load_checkpoint, locate_parent, parent_record,
                              sha256_file)
from utils.config import apply_overrides, from_dict, to_dict
from utils.errors import CheckpointError, ConfigError
from utils.logging import get_logger

# settings that may differ between the trained config and an inference run (see the module docstring)
CHANGEABLE = ("normalize_scores", "fused_smoothing", "lm_block", "score_offsets", "inference_stride", "local_rx.inner",
              "local_rx.outer", "local_rx.n_components", "rx_components")
# settings that define trained weights or what they were trained for: an inference run must not change them
FIXED = ("freeze_encoder", "use_lora", "lora.r", "lora.alpha", "lora.target_modules", "one_class.per_token",
         "one_class.rep_dim", "one_class.center_eps", "supervised", "adapt_steps")
EMBEDDED_KEY = "embedded_parents"  # detector checkpoint entry: {"encoder": uint8 tensor, "tokenizer": ...}
log = get_logger("anomaly")


# ---------------------------------------------------------------------- the checkpoint chain
def load_universal_model(encoder_ckpt: str | Path, device: torch.device, tokenizer_ckpt: str | Path | None = None
                         ) -> tuple[UniversalHSIModel, dict[str, Any]]:
    """Tokenizer -> encoder from their checkpoints (sha256-checked); returns (model, info). `tokenizer_ckpt`:
    the tokenizer file when it is not where the encoder checkpoint records it (an embedded copy).

    info: "tokenizer_config" (preprocessing: num_bands, normalize, patch_size, stride), "num_domains",
    "domains", "domain_spectra" (None in checkpoints older than `domain_id: auto`), "hidden_size",
    "encoder" / "tokenizer" parent records.
    """
    enc_ckpt = load_checkpoint(encoder_ckpt, "encoder")
    tok_path = Path(tokenizer_ckpt) if tokenizer_ckpt is not None else locate_parent(enc_ckpt, encoder_ckpt, "tokenizer")
    check_parent(enc_ckpt, encoder_ckpt, tok_path)
    tokenizer, tok_ckpt = load_tokenizer(tok_path)
    encoder, _ = load_encoder(encoder_ckpt)
    if encoder.grid_size != tokenizer.grid_size:
        raise CheckpointError(f"{encoder_ckpt}: encoder grid {encoder.grid_size} != tokenizer grid "
                              f"{tokenizer.grid_size} of {tok_path}")
    k_s = encoder.spectral_codebook_size
    if encoder.joint_vocab_size != tokenizer.joint_vocab_size or k_s not in (None, tokenizer.K_s):
        raise CheckpointError(f"{encoder_ckpt}: encoder vocabulary {encoder.joint_vocab_size} (K_s "
                              f"{k_s}) does not match the joint vocabulary "
                              f"{tokenizer.joint_vocab_size} (K_s {tokenizer.K_s}) of its tokenizer {tok_path}; "
                              f"re-run Stage 2 with that tokenizer")
    model = UniversalHSIModel(tokenizer, encoder).to(device).eval()
    info = {
        "tokenizer_config": tok_ckpt["config"],
        "num_domains": int(encoder.num_domains),
        "domains": dict(enc_ckpt.get("domains", {})),
        "domain_spectra": enc_ckpt.get("domain_spectra"),
        "hidden_size": int(encoder.hidden_size),
        "encoder": parent_record(encoder_ckpt),
        "tokenizer": parent_record(tok_path),
    }
    return model, info


def build_detector(cfg: AnomalyConfig, model: UniversalHSIModel, info: dict[str, Any],
                   supervised: bool) -> HSIAnomalyDetector:
    """The detector `cfg` describes on top of `model`, its settings checked against the encoder."""
    if isinstance(cfg.domain_id, int) and cfg.domain_id >= info["num_domains"]:
        raise ConfigError(f"domain_id: {cfg.domain_id}, but the encoder knows {info['num_domains']} domains "
                          f"{info['domains'] or ''}; pick the id of the most similar pre-training sensor")
    grid = model.tokenizer.grid_size
    spectral = sorted({"ctx_spec", "ctx_rx", "ctx_lrx"} & set(cfg.head_weights.active()))
    if spectral and model.encoder.spectral_input_dim == 0:
        raise ConfigError(f"head_weights: {', '.join(spectral)} predict spectra, but the encoder {info['encoder']['path']} "
                          f"was pre-trained without spectral_input; set their weights to 0 or re-run Stage 2 with "
                          f"spectral_input: true")
    if set(cfg.head_weights.active()) & set(CONTEXT_HEADS) and grid > 1 and cfg.lm_block >= grid:
        raise ConfigError(f"lm_block: {cfg.lm_block} must be smaller than the token grid ({grid}x{grid}), "
                          f"else one scoring mask hides every token")
    patch_size = int(info["tokenizer_config"]["patch_size"])
    if cfg.inference_stride > patch_size:
        raise ConfigError(f"inference_stride {cfg.inference_stride} is larger than the patch size {patch_size}: "
                          f"pixels between patches would go unscored; use 0 (= the patch size) or less")
    return HSIAnomalyDetector(
        model, info["hidden_size"], freeze_encoder=cfg.freeze_encoder, use_lora=cfg.use_lora,
        head_weights=cfg.head_weights.as_dict(),
        lora={"r": cfg.lora.r, "alpha": cfg.lora.alpha, "dropout": cfg.lora.dropout,
              "target_modules": list(cfg.lora.target_modules)},
        one_class={"rep_dim": cfg.one_class.rep_dim, "per_token": cfg.one_class.per_token,
                   "center_eps": cfg.one_class.center_eps},
        objective="bce" if supervised else "svdd", lm_block=cfg.lm_block, normalize=cfg.normalize_scores,
        smoothing=cfg.fused_smoothing,
        local_rx={"inner": cfg.local_rx.inner, "outer": cfg.local_rx.outer,
                  "n_components": cfg.local_rx.n_components}, rx_components=cfg.rx_components,
        stride=cfg.inference_stride or patch_size, score_offsets=cfg.score_offsets,
        adapted_domain=cfg.adapt_steps > 0,
    )


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"local_rx.inner": 7, ...}: a nested config dict flattened to dotted keys."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _model_key(key: str) -> bool:
    """True for the settings an inference run compares with the trained ones (module docstring)."""
    return key in CHANGEABLE or key in FIXED or key.startswith("head_weights.") or key == "domain_id"


def inference_settings(trained: AnomalyConfig, overrides: list[str], ckpt_path: str | Path,
                       run_file: AnomalyConfig | None = None, file_name: str | Path | None = None) -> AnomalyConfig:
    """The config a detector scores with: `trained`, changed by the `overrides` (`key=value`) that may change.

    An override that needs retraining is a ConfigError naming the key, both values and the checkpoint. Model
    settings of the run's config file (`run_file`, read from `file_name`) that differ from the trained ones and
    are not overridden are not applied (the file is usually the training config, edited since) but logged in one
    WARNING, with the `--set` that would apply them."""
    old = _flat(to_dict(trained))
    requested = _flat(to_dict(apply_overrides(from_dict(AnomalyConfig, to_dict(trained)), list(overrides))))
    changed = {key: value for key, value in requested.items() if _model_key(key) and old[key] != value}
    for key, value in changed.items():
        refused = key in FIXED
        if key == "head_weights.one_class" and old[key] == 0 and value > 0:
            refused = True  # its weights were never trained
        if key == "domain_id" and trained.adapt_steps > 0:
            refused = True  # the trained domain row was fitted to the training scene
        if refused:
            raise ConfigError(f"--set {key}={value}: {ckpt_path} was trained with {key} = {old[key]!r}, and this "
                              f"cannot change without retraining: re-run anomaly/train_anomaly.py with it")
        log.info(f"{key}: {old[key]!r} at training -> {value!r} for this run (--set)")
    effective = apply_overrides(from_dict(AnomalyConfig, to_dict(trained)),
                                [f"{key}={json.dumps(value)}" for key, value in changed.items()])
    effective.validate()
    if run_file is not None:
        overridden = {item.split("=", 1)[0].strip() for item in overrides}
        differ = {key: value for key, value in _flat(to_dict(run_file)).items()
                  if _model_key(key) and old[key] != value and key not in changed
                  and not any(key == o or key.startswith(o + ".") for o in overridden)}
        if differ:
            listed = ", ".join(f"{key} {old[key]!r} (file: {value!r})" for key, value in differ.items())
            sets = " ".join(f"--set {key}={json.dumps(value)}" for key, value in differ.items())
            log.warning(f"{file_name}: the detector scores with its trained settings {listed}; to score with the "
                        f"file's instead pass {sets}")
    return effective


def _embedded_parents(ckpt: dict[str, Any], ckpt_path: str | Path, folder: Path) -> tuple[Path, Path]:
    """Write the encoder and tokenizer copies a self-contained detector carries into `folder`, after checking
    each against the sha256 its child recorded; returns (encoder path, tokenizer path)."""
    paths = {}
    for what, child in (("encoder", ckpt), ("tokenizer", None)):
        data = ckpt[EMBEDDED_KEY][what].numpy().tobytes()
        path = folder / f"{what}.pth"
        write_files({path: data})
        record = (child or load_checkpoint(paths["encoder"], "encoder"))["parent"]
        if sha256_file(path) != record["sha256"]:
            raise CheckpointError(f"{ckpt_path}: its embedded {what} checkpoint does not match the sha256 recorded "
                                  f"for it ({record['sha256'][:12]}); the file is damaged, re-export it")
        paths[what] = path
    return paths["encoder"], paths["tokenizer"]


def load_detector(detector_ckpt: str | Path, device: torch.device, overrides: list[str] | None = None,
                  run_file: AnomalyConfig | None = None, file_name: str | Path | None = None
                  ) -> tuple[HSIAnomalyDetector, AnomalyConfig, dict[str, Any], dict[str, Any]]:
    """Rebuild the trained detector: (detector in eval mode, the config it scores with, ckpt, info).

    `overrides` (`key=value`) change what may change for this run, `run_file` (the run's config file, named
    `file_name`) only warns where it differs (`inference_settings`). Without them it scores exactly as trained."""
    ckpt = load_checkpoint(detector_ckpt, "anomaly")
    try:
        trained = from_dict(AnomalyConfig, ckpt["config"]["anomaly"])
        trained.validate()
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{detector_ckpt}: its stored config is not a valid anomaly config: {err}") from None
    effective = inference_settings(trained, list(overrides or []), detector_ckpt, run_file, file_name)
    with tempfile.TemporaryDirectory(prefix="sspq-parents-") as folder:
        if EMBEDDED_KEY in ckpt:
            enc_path, tok_path = _embedded_parents(ckpt, detector_ckpt, Path(folder))
        else:
            enc_path, tok_path = locate_parent(ckpt, detector_ckpt, "encoder"), None
            check_parent(ckpt, detector_ckpt, enc_path)
        model, info = load_universal_model(enc_path, device, tok_path)
        if EMBEDDED_KEY in ckpt:  # name the files the chain was built from, not the temporary copies
            info["encoder"], info["tokenizer"] = dict(ckpt["parent"]), dict(ckpt["tokenizer"])
    detector = build_detector(effective, model, info, ckpt["config"]["objective"] == "bce")
    state = ckpt["state_dict"]
    if trained.head_weights.one_class > 0 and effective.head_weights.one_class == 0:
        state = {k: v for k, v in state.items() if not k.startswith("one_class_head.")}  # switched off for this run
    try:
        detector.load_trained_state_dict(state)
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{detector_ckpt}: weights do not fit the detector its config describes: "
                              f"{describe_load_error(err)}; retrain Stage 3") from None
    return detector.to(device).eval(), effective, ckpt, info


# ---------------------------------------------------------------------- the scene
def fit_preprocessor(scene: Scene, tokenizer_config: dict[str, Any], source: str | None = None
                     ) -> SpectralPreprocessor:
    """Per-scene spectral preprocessing with the tokenizer's num_bands and normalisation (DESIGN 3);
    `source` (the scene's path) names the file in errors."""
    return SpectralPreprocessor.fit(scene.cube, int(tokenizer_config["num_bands"]),
                                    tokenizer_config["normalize"], scene.wavelengths, source=source)


def resolve_domain(setting: int | str, scene: Scene, info: dict[str, Any], source: str | None = None,
                   prep: SpectralPreprocessor | None = None) -> DomainChoice:
    """`domain_id` (an int, or 'auto') for `scene` (anomaly/domain.py), logged. By spectrum, the scene is
    prepared as the tokenizer prepares it (`prep`, fitted on this scene, when the caller has one)."""
    def spectrum():
        return mean_spectrum(scene.cube, (prep or fit_preprocessor(scene, info["tokenizer_config"], source)).transform)

    choice = choose_domain(setting, scene.name, spectrum, info["domains"], info.get("domain_spectra"),
                           info["num_domains"], info["encoder"]["path"])
    log.info(f"{scene.name}: {choice.describe()}")
    return choice


def same_scene(a: Scene, path_a: str, b: Scene, path_b: str) -> bool:
    """True when two scenes are the same file or hold the same cube (DESIGN 5: never train on the scored scene)."""
    if path_a == path_b:
        return True
    pa, pb = Path(path_a), Path(path_b)
    if pa.is_file() and pb.is_file() and pa.resolve() == pb.resolve():
        return True
    if a.cube.shape != b.cube.shape:
        return False
    return all(np.array_equal(x, y) for (_, x), (_, y) in zip(iter_row_chunks(a.cube), iter_row_chunks(b.cube)))
