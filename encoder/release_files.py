"""Where a release lives and what its files are called; imports neither torch nor safetensors, so the command lines
can decide which encoder to use before torch loads (encoder/release.py reads and writes the files).

    release_folder("weights/encoder.safetensors")   # Path("weights") when weights/config.json is there, else None
"""

from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config.json"  # the release's identity: it records the sha256 of every weight file
WEIGHT_FILES = {"tokenizer": "tokenizer.safetensors", "encoder": "encoder.safetensors"}
RELEASE_DIR = Path(__file__).resolve().parent.parent / "weights"  # the release this repository ships


def release_folder(path: str | Path) -> Path | None:
    """The release folder that `path` names (the folder, its config.json or one of its weight files), or None
    when `path` is not part of a release (an ordinary .pth checkpoint)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir() or path.name == CONFIG_NAME or path.name in WEIGHT_FILES.values():
        return folder if (folder / CONFIG_NAME).is_file() else None
    return None
