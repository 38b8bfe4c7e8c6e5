"""Self-describing checkpoints, written atomically and read with `weights_only=True`.

Every checkpoint is a dict of plain types (docs/design.md "Self-describing checkpoints", STYLE):

    {"format_version", "stage", "config", "state_dict", "optimizer", "scheduler", "scaler",
     "step", "epoch", "rng", "metrics", "parent": {"path", "relative", "sha256"} | None}

`stage` is one of STAGES; a later stage records the file and sha256 of the checkpoint it builds on:
its absolute path, and its path relative to the later checkpoint's folder, so that `locate_parent`
finds it from any working directory and after the folder holding both has moved. `check_parent`
turns a sha256 mismatch into an error naming both files.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from utils.atomic import atomic_write
from utils.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
STAGES = ("tokenizer", "encoder", "anomaly")
_STAGE_HINT = {
    "tokenizer": "sspq_tokenizer/train_tokenizer.py writes it (checkpoints/tokenizer/best.pth)",
    "encoder": "encoder/pretrain_mtp.py writes it (checkpoints/encoder/universal_hsi_encoder.pth)",
    "anomaly": "anomaly/train_anomaly.py writes it (checkpoints/anomaly/<scene name>/anomaly_detector.pth)",
}


def _a(word: str) -> str:
    return f"{'an' if str(word)[:1].lower() in 'aeiou' else 'a'} {word}"


def _first_sentence(err: BaseException) -> str:
    """The first sentence of an exception's message (torch's can run to a paragraph)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text.split(". ")[0][:160]


def describe_load_error(err: BaseException) -> str:
    """One line out of `load_state_dict`'s multi-line RuntimeError: the first concrete mismatch."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = next((line for line in lines[1:]), lines[0] if lines else type(err).__name__)
    return detail[:300].rstrip(".")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def payload_bytes(value: Any) -> int:
    """About the size `torch.save` gives `value`: its tensors' bytes (plus 64 per other leaf)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, dict):
        return sum(payload_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    return 64


def parent_record(path: str | Path) -> dict[str, str]:
    """What a later stage stores about the checkpoint it was built from (`save_checkpoint` adds the
    path relative to the new checkpoint)."""
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


def locate_parent(ckpt: dict[str, Any], ckpt_path: str | Path, what: str) -> Path:
    """The file `ckpt` was built from: its recorded path, else the recorded path relative to `ckpt_path`'s
    folder. `what` names the parent in the error when neither exists."""
    recorded = ckpt.get("parent") or {}
    if not recorded.get("path"):
        raise CheckpointError(f"{ckpt_path}: names no {what} checkpoint (no parent record)")
    candidates = [Path(recorded["path"])]
    if recorded.get("relative"):
        candidates.append(Path(ckpt_path).parent / recorded["relative"])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{ckpt_path} was built from the {what} {' or '.join(map(str, dict.fromkeys(candidates)))}, "
                          f"which is missing; restore it, or re-run the stage that writes it")


def save_checkpoint(path: str | Path, stage: str, config: dict[str, Any],
                    state_dict: dict[str, torch.Tensor], **extra: Any) -> Path:
    """Write a checkpoint atomically. `extra` holds optimizer, step, metrics, parent, ... (plain types)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if extra.get("parent"):
        parent = dict(extra["parent"])
        parent["relative"] = os.path.relpath(parent["path"], Path(path).resolve().parent)
        extra = {**extra, "parent": parent}
    payload = {"format_version": FORMAT_VERSION, "stage": stage, "config": config,
               "state_dict": state_dict, **extra}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), payload_bytes(payload))


def check_format_version(version: Any, path: Path, stage: str) -> None:
    """Refuse a checkpoint of another format, naming both versions and what to do."""
    if version == FORMAT_VERSION:
        return
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} is newer than format {FORMAT_VERSION}, the one "
                              f"this code reads: it was written by a later sspq-hsi; update this checkout to read "
                              f"it, or re-create it with this one: {_STAGE_HINT.get(stage, '')}")
    written = "no format version" if version is None else f"format {version}"
    raise CheckpointError(f"{path}: checkpoint has {written}, from before format {FORMAT_VERSION}, the one this "
                          f"code reads; read it with the sspq-hsi version that wrote it, or re-create it: "
                          f"{_STAGE_HINT.get(stage, '')}")


def read_checkpoint(path: str | Path, stage: str, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Any], dict[str, str]]:
    """Load and check a checkpoint of `stage`, reading the file once: (ckpt, its {"path", "sha256"} record).
    Every failure is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {_STAGE_HINT.get(stage, '')}")
    data = path.read_bytes()
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a Python object: never executed, never loaded
        raise CheckpointError(f"{path}: refused: it holds Python objects other than tensors and plain types, "
                              f"which torch.load(weights_only=True) will not run; use a checkpoint written by "
                              f"this project ({_STAGE_HINT.get(stage, '')})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {_first_sentence(err)}); "
                              f"re-create it ({_STAGE_HINT.get(stage, '')})") from None
    if not isinstance(ckpt, dict) or "stage" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not an sspq-hsi checkpoint (no 'stage'/'state_dict' entries)")
    check_format_version(ckpt.get("format_version"), path, stage)
    if ckpt["stage"] != stage:
        raise CheckpointError(f"{path}: this is {_a(ckpt['stage'])} checkpoint, but {_a(stage)} checkpoint is "
                              f"expected here; {_STAGE_HINT.get(stage, '')}")
    return ckpt, {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest()}


def load_checkpoint(path: str | Path, stage: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """`read_checkpoint` without the record."""
    return read_checkpoint(path, stage, map_location)[0]


def check_parent(ckpt: dict[str, Any], ckpt_path: str | Path, parent_path: str | Path,
                 actual: dict[str, str] | None = None) -> dict[str, str]:
    """Raise if `parent_path` is not the file `ckpt` was built from (by sha256); returns the parent's record
    (`actual`, when the caller has read and hashed the parent already: `read_checkpoint`)."""
    recorded = ckpt.get("parent")
    if not recorded:
        raise CheckpointError(f"{ckpt_path}: records no parent checkpoint to check {parent_path} against")
    actual = actual or parent_record(parent_path)
    if actual["sha256"] != recorded["sha256"]:
        raise CheckpointError(
            f"{ckpt_path} was built from {recorded['path']} (sha256 {recorded['sha256'][:12]}), but "
            f"{parent_path} has sha256 {actual['sha256'][:12]}: retrain this stage, or pass the original file")
    return actual


def check_resume_config(stored: dict[str, Any], current: dict[str, Any], path: str | Path,
                        may_change: tuple[str, ...]) -> None:
    """--resume: refuse a `last.pth` (at `path`) whose config `stored` differs from `current` in a key other
    than `may_change`, naming the keys."""
    differ = sorted(k for k in set(stored) | set(current) if k not in may_change and stored.get(k) != current.get(k))
    if differ:
        raise ConfigError(f"--resume: {path} was written with a different config ({', '.join(differ)}); use the "
                          f"same config and overrides (only {', '.join(may_change)} may change), or start afresh "
                          f"without --resume")
