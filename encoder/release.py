"""The released universal encoder: a Stage 1 tokenizer and Stage 2 encoder as safetensors files beside a config.json.

    write_release("runs/release/encoder/universal_hsi_encoder.pth", "weights", sensors={"hydice-urban": "HYDICE"})
    tok_ckpt, tok_record, enc_ckpt, enc_record = read_release("weights")   # no unpickling

A release folder holds `tokenizer.safetensors`, `encoder.safetensors` (weights only) and `config.json`: the
format, each weight file's sha256, the two stages' configs (architecture and preprocessing), the encoder's
constructor arguments and its domain table (each pre-training scene's name, id, sensor and mean prepared
spectrum). `read_release` checks every weight file against its recorded sha256 and rebuilds the two checkpoint
dicts that `anomaly.checkpoint.load_universal_model` reads from .pth files. The release's record is config.json's
path and sha256 (it pins the weight files by theirs), so a detector built on a release records and checks it as
its parent like any encoder checkpoint, and an edited config.json is refused there. The model card is text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from encoder.release_files import CONFIG_NAME, WEIGHT_FILES, release_folder
from utils.atomic import write_files
from encoder.checkpoint import read_encoder_chain
from utils.checkpoint import FORMAT_VERSION
from utils.errors import CheckpointError

RELEASE_FORMAT = "sspq-hsi-release"
RELEASE_VERSION = 1
MACHINE_KEYS = ("output_dir", "tokenizer_ckpt")  # where the builder's checkpoints were: nothing to a user of the release


def _portable(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in MACHINE_KEYS}


def _tensors(state_dict: dict[str, torch.Tensor]) -> bytes:
    # safetensors refuses tensors that share memory (BERT ties its decoder to the word embeddings): store copies
    return save_tensors({name: value.detach().contiguous().clone() for name, value in state_dict.items()})


def write_release(encoder_ckpt: str | Path, out: str | Path, sensors: dict[str, str]) -> dict[str, Any]:
    """Write the release folder `out` from an encoder checkpoint and the tokenizer checkpoint it records;
    `sensors`: pre-training scene name -> sensor, "*" for every scene not named (each scene of the domain table
    needs one). Returns config.json."""
    enc_ckpt, _, _, tok_ckpt, _ = read_encoder_chain(encoder_ckpt)
    spectra = enc_ckpt.get("domain_spectra")
    if not spectra:
        raise CheckpointError(f"{encoder_ckpt} records no mean spectra of its domains, which a release needs to "
                              f"choose a new scene's domain; re-run Stage 2 with this code")
    sensors = {name: sensors.get(name, sensors.get("*")) for name in enc_ckpt["domains"]}
    missing = sorted(name for name, sensor in sensors.items() if not sensor)
    if missing:
        raise CheckpointError(f"no sensor given for the pre-training scene(s) {', '.join(missing)}")
    blobs = {"tokenizer": _tensors(tok_ckpt["state_dict"]), "encoder": _tensors(enc_ckpt["state_dict"])}
    domains = [{"id": int(domain_id), "name": name, "sensor": sensors[name], "mean_spectrum": list(spectra[name])}
               for name, domain_id in sorted(enc_ckpt["domains"].items(), key=lambda item: item[1])]
    config = {
        "format": RELEASE_FORMAT, "format_version": RELEASE_VERSION,
        "sha256": {WEIGHT_FILES[what]: hashlib.sha256(blob).hexdigest() for what, blob in blobs.items()},
        "tokenizer": {"config": _portable(tok_ckpt["config"])},
        "encoder": {"config": _portable(enc_ckpt["config"])},  # its encoder_args rebuild the model
        "domains": domains,
    }
    out = Path(out)
    write_files({**{out / WEIGHT_FILES[what]: blob for what, blob in blobs.items()},
                 out / CONFIG_NAME: json.dumps(config, indent=1, sort_keys=True) + "\n"})
    return config


def _weights(folder: Path, config: dict[str, Any], what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One weight file, checked against its recorded sha256: (state dict, {"path", "sha256"})."""
    path = folder / WEIGHT_FILES[what]
    if not path.is_file():
        raise CheckpointError(f"{folder}: the release's {path.name} is missing")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    recorded = config["sha256"][path.name]
    if digest != recorded:
        raise CheckpointError(f"{path}: sha256 {digest[:12]} differs from the {str(recorded)[:12]} recorded in "
                              f"{folder / CONFIG_NAME}: the file is damaged or was replaced; restore the release "
                              f"(git checkout weights/) or rebuild it (scripts/build_release.py)")
    try:
        state = load_tensors(data)
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    return state, {"path": str(path.resolve()), "sha256": digest}


def read_release(path: str | Path) -> tuple[dict[str, Any], dict[str, str], dict[str, Any], dict[str, str]]:
    """(tokenizer checkpoint dict, its record, encoder checkpoint dict, its record) from the release folder that
    `path` names, every file checked against config.json; nothing is unpickled."""
    folder = release_folder(path)
    if folder is None:
        raise CheckpointError(f"{path}: not a release folder (no {CONFIG_NAME} beside it)")
    config_path = folder / CONFIG_NAME
    try:
        data = config_path.read_bytes()
        config = json.loads(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path}: not a readable release config ({err})") from None
    if not isinstance(config, dict) or config.get("format") != RELEASE_FORMAT or (
            config.get("format_version") != RELEASE_VERSION):
        found = config if not isinstance(config, dict) else (config.get("format"), config.get("format_version"))
        raise CheckpointError(f"{config_path}: release format {found!r}; this code reads {RELEASE_FORMAT!r} "
                              f"version {RELEASE_VERSION}")
    try:
        tok_state, tok_record = _weights(folder, config, "tokenizer")
        enc_state, _ = _weights(folder, config, "encoder")
        tok_ckpt = {"format_version": FORMAT_VERSION, "stage": "tokenizer", "config": config["tokenizer"]["config"],
                    "state_dict": tok_state}
        domains = config["domains"]
        enc_ckpt = {"format_version": FORMAT_VERSION, "stage": "encoder", "config": config["encoder"]["config"],
                    "encoder_args": config["encoder"]["config"]["encoder_args"], "state_dict": enc_state,
                    "domains": {d["name"]: d["id"] for d in domains},
                    "domain_spectra": {d["name"]: d["mean_spectrum"] for d in domains},
                    "parent": dict(tok_record)}
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{config_path}: the release config lacks {err} (written by another tool, or "
                              f"edited); rebuild it (scripts/build_release.py, sspq-hsi export release)") from None
    record = {"path": str(config_path.resolve()), "sha256": hashlib.sha256(data).hexdigest()}
    return tok_ckpt, tok_record, enc_ckpt, record
