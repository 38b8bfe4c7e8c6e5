"""Export a trained detector as one self-contained file that scores a scene on another machine.

    python anomaly/export_detector.py --detector_ckpt checkpoints/anomaly/abu-urban-1/anomaly_detector.pth \
        --out detector_portable.pth [--overwrite]
    python anomaly/inference.py --detector_ckpt detector_portable.pth --data_path scene.npz   # anywhere

`anomaly_detector.pth` names its encoder checkpoint, which names its tokenizer checkpoint; scoring needs all
three files where they were recorded. The exported file carries the encoder's and the tokenizer's checkpoint
files byte for byte inside it (`embedded_parents`), next to the sha256 each child recorded for them, so the
chain is checked exactly as with the separate files (anomaly/checkpoint.py). The export is about the size of the
three checkpoints together.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python anomaly/export_detector.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anomaly.cli_args import export_parser as build_parser  # noqa: E402  (imports neither torch nor transformers)
from utils.cli import parse_cli, run_main  # noqa: E402

if __name__ == "__main__":  # parsed before torch loads: --help and usage errors answer at once
    ARGS = parse_cli(build_parser())

import torch  # noqa: E402

from anomaly.checkpoint import EMBEDDED_KEY, RELEASE_KEY  # noqa: E402
from encoder.checkpoint import read_encoder_chain  # noqa: E402
from encoder.release import read_release  # noqa: E402
from encoder.release_files import CONFIG_NAME, WEIGHT_FILES, release_folder  # noqa: E402
from utils.checkpoint import check_parent, load_checkpoint, locate_parent, save_checkpoint  # noqa: E402
from utils.errors import CheckpointError, ConfigError  # noqa: E402
from utils.logging import get_logger  # noqa: E402

log = get_logger("anomaly")
BASE_KEYS = ("format_version", "stage", "config", "state_dict")  # what save_checkpoint writes itself


def _file_tensor(path: Path) -> torch.Tensor:
    """A file's bytes as a uint8 tensor (what torch.load(weights_only=True) reads back)."""
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def export_detector(detector_ckpt: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write `out`: the detector checkpoint with its encoder and tokenizer checkpoints embedded; returns `out`."""
    detector_ckpt, out = Path(detector_ckpt), Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    if out.resolve() == detector_ckpt.resolve():
        raise ConfigError(f"--out {out} is the detector checkpoint itself; write the export to another file")
    ckpt = load_checkpoint(detector_ckpt, "anomaly")
    if EMBEDDED_KEY in ckpt:
        raise CheckpointError(f"{detector_ckpt} is already self-contained (it carries its encoder and tokenizer)")
    enc_path = locate_parent(ckpt, detector_ckpt, "encoder")
    check_parent(ckpt, detector_ckpt, enc_path)
    release = release_folder(enc_path)
    if release is not None:  # built on a release (its config.json recorded): carry its three files, checked as read
        read_release(release)
        enc_path, tok_path = release / WEIGHT_FILES["encoder"], release / WEIGHT_FILES["tokenizer"]
    else:
        tok_path = read_encoder_chain(enc_path)[2]
    extra = {key: value for key, value in ckpt.items() if key not in BASE_KEYS}
    extra[EMBEDDED_KEY] = {"encoder": _file_tensor(enc_path), "tokenizer": _file_tensor(tok_path)}
    if release is not None:
        extra[EMBEDDED_KEY][RELEASE_KEY] = _file_tensor(release / CONFIG_NAME)
    save_checkpoint(out, "anomaly", ckpt["config"], ckpt["state_dict"], **extra)
    log.info(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): {detector_ckpt} with {enc_path} and {tok_path} inside")
    return out


def main(args) -> None:
    export_detector(args.detector_ckpt, args.out, args.overwrite)


if __name__ == "__main__":
    run_main(main, ARGS)
