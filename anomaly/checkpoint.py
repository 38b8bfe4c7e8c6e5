"""The checkpoint chain of Stage 3: detector -> encoder -> tokenizer, each link checked by sha256.

    model, info = load_universal_model("checkpoints/encoder/universal_hsi_encoder.pth", device)
    chain = read_detector("checkpoints/anomaly/synthetic/anomaly_detector.pth", device)   # DetectorFile

Every file is read and hashed once. A detector exported with its parents inside (anomaly/export_detector.py) is
read from those embedded copies, checked the same way. This module reads files and rebuilds the frozen models;
the detector built on top of them is anomaly/detector.py's (`HSIAnomalyDetector.from_checkpoint`).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from anomaly.config import AnomalyConfig
from encoder.checkpoint import load_encoder, read_encoder_chain
from encoder.hsi_bert_encoder import UniversalHSIModel
from encoder.release import read_release
from encoder.release_files import CONFIG_NAME, WEIGHT_FILES, release_folder
from sspq_tokenizer.checkpoint import load_tokenizer
from utils.atomic import write_files
from utils.checkpoint import check_parent, locate_parent, read_checkpoint
from utils.config import from_dict
from utils.errors import CheckpointError, ConfigError

EMBEDDED_KEY = "embedded_parents"  # detector checkpoint entry: {"encoder": uint8 tensor, "tokenizer": ...}
RELEASE_KEY = "release_config"  # ... and, for a detector built on a release, {"release_config": config.json's bytes}
# LoRA settings older detectors stored: the adapters now train only in the scene fit, in eval mode, by its own loss
RETIRED_LORA_KEYS = ("dropout", "mlm_weight")
# (encoder_ckpt, device, tokenizer_ckpt=None) -> (model, info): load_universal_model, or a ModelCache's load
ModelLoader = Callable[..., tuple[UniversalHSIModel, dict[str, Any]]]


def _read_pair(encoder_ckpt: str | Path, tokenizer_ckpt: str | Path | None
               ) -> tuple[dict[str, Any], dict[str, str], Path, dict[str, Any], dict[str, str]]:
    """`read_encoder_chain`'s (encoder ckpt, record, tokenizer path, tokenizer ckpt, record), from a .pth pair or a
    release folder."""
    if tokenizer_ckpt is None and release_folder(encoder_ckpt) is not None:
        tok_ckpt, tok_record, enc_ckpt, enc_record = read_release(encoder_ckpt)
        return enc_ckpt, enc_record, Path(tok_record["path"]), tok_ckpt, tok_record
    return read_encoder_chain(encoder_ckpt, tokenizer_ckpt)


def load_universal_model(encoder_ckpt: str | Path, device: torch.device, tokenizer_ckpt: str | Path | None = None
                         ) -> tuple[UniversalHSIModel, dict[str, Any]]:
    """Tokenizer -> encoder from their checkpoints (sha256-checked) or from a release folder (encoder/release.py:
    the folder or its encoder.safetensors); returns (model in eval mode, info).
    `tokenizer_ckpt`: the tokenizer file when it is not where the encoder checkpoint records it (an embedded copy).

    info: "tokenizer_config" (preprocessing: num_bands, normalize, patch_size, stride), "num_domains",
    "domains", "domain_spectra" (None in checkpoints older than `domain_id: auto`), "hidden_size",
    "encoder" / "tokenizer" parent records ({"path", "sha256"}).
    """
    enc_ckpt, enc_record, tok_path, tok_ckpt, tok_record = _read_pair(encoder_ckpt, tokenizer_ckpt)
    tokenizer, _ = load_tokenizer(tok_path, ckpt=tok_ckpt)
    encoder, _ = load_encoder(encoder_ckpt, ckpt=enc_ckpt)
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
        "encoder": enc_record,
        "tokenizer": tok_record,
    }
    return model, info


@dataclass
class DetectorFile:
    """A detector checkpoint read with its parents: the dict as stored, its trained config, the frozen models
    it builds on (`load_universal_model`'s model and info) and the file's own {"path", "sha256"}."""

    ckpt: dict[str, Any]
    trained: AnomalyConfig
    model: UniversalHSIModel
    info: dict[str, Any]
    record: dict[str, str]

    @property
    def supervised(self) -> bool:
        return self.ckpt["config"]["objective"] == "bce"


def trained_config(ckpt: dict[str, Any], path: str | Path) -> AnomalyConfig:
    """The validated AnomalyConfig a detector checkpoint (read from `path`) was trained with; settings that have
    since been retired (RETIRED_LORA_KEYS) are dropped, so an older detector still scores."""
    try:
        stored = dict(ckpt["config"]["anomaly"])
        if isinstance(stored.get("lora"), dict):
            stored["lora"] = {k: v for k, v in stored["lora"].items() if k not in RETIRED_LORA_KEYS}
        trained = from_dict(AnomalyConfig, stored)
        trained.validate()
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: its stored config is not a valid anomaly config: {err}") from None
    return trained


def _check_embedded(data: bytes, record: dict[str, str], ckpt_path: str | Path, what: str) -> None:
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CheckpointError(f"{ckpt_path}: its embedded {what} checkpoint does not match the sha256 recorded "
                              f"for it ({record['sha256'][:12]}); the file is damaged, re-export it")


def _embedded_parents(ckpt: dict[str, Any], ckpt_path: str | Path, folder: Path) -> tuple[Path, Path | None]:
    """Write the encoder and tokenizer copies a self-contained detector carries into `folder`, after checking
    each (in memory) against the sha256 its child recorded; returns (encoder path, tokenizer path). A detector
    built on a release carries the release's three files (its tokenizer is checked by read_release: tokenizer None)."""
    embedded = ckpt[EMBEDDED_KEY]
    data = {what: embedded[what].numpy().tobytes() for what in ("encoder", "tokenizer")}
    if RELEASE_KEY in embedded:  # the recorded parent is the release's config.json, which pins both weight files
        config = embedded[RELEASE_KEY].numpy().tobytes()
        _check_embedded(config, ckpt["parent"], ckpt_path, "release config")
        write_files({folder / WEIGHT_FILES[what]: blob for what, blob in data.items()} | {folder / CONFIG_NAME: config})
        return folder / CONFIG_NAME, None
    _check_embedded(data["encoder"], ckpt["parent"], ckpt_path, "encoder")
    # the tokenizer's record is in the encoder checkpoint
    enc_ckpt = torch.load(io.BytesIO(data["encoder"]), map_location="cpu", weights_only=True)
    _check_embedded(data["tokenizer"], enc_ckpt["parent"], ckpt_path, "tokenizer")
    write_files({folder / f"{what}.pth": blob for what, blob in data.items()})
    return folder / "encoder.pth", folder / "tokenizer.pth"


def read_detector(detector_ckpt: str | Path, device: torch.device,
                  read: tuple[dict[str, Any], dict[str, str]] | None = None,
                  load_models: ModelLoader = load_universal_model) -> DetectorFile:
    """Read `anomaly_detector.pth` and rebuild the frozen models it builds on (module docstring); `read`: the
    file's (ckpt, record) when the caller has already read it (utils.checkpoint.read_checkpoint); `load_models`
    rebuilds the encoder it names (anomaly/model_cache.py keeps them between scenes; embedded copies never)."""
    ckpt, record = read or read_checkpoint(detector_ckpt, "anomaly")
    trained = trained_config(ckpt, detector_ckpt)
    with tempfile.TemporaryDirectory(prefix="sspq-parents-") as folder:
        if EMBEDDED_KEY in ckpt:
            enc_path, tok_path = _embedded_parents(ckpt, detector_ckpt, Path(folder))
        else:
            enc_path, tok_path = locate_parent(ckpt, detector_ckpt, "encoder"), None
        load = load_universal_model if EMBEDDED_KEY in ckpt else load_models  # a temporary copy is read once
        model, info = load(enc_path, device, tok_path)
        if EMBEDDED_KEY not in ckpt:  # the encoder's record was taken as it was read
            check_parent(ckpt, detector_ckpt, enc_path, info["encoder"])
        if EMBEDDED_KEY in ckpt:  # name the files the chain was built from, not the temporary copies
            info["encoder"], info["tokenizer"] = dict(ckpt["parent"]), dict(ckpt["tokenizer"])
    return DetectorFile(ckpt, trained, model, info, record)
