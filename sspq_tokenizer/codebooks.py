"""The codebook file of spec 4.3 (`SSPQTokenizer.save_codebooks(path)` / `load_codebooks(path)` call these):
both VQ codebooks (code vectors + EMA statistics) and their sizes, written atomically.

    save_codebooks(tokenizer, "codebooks.pth")
    load_codebooks(other, "codebooks.pth")       # sizes K_s, K_x must match
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from utils.atomic import atomic_write
from utils.checkpoint import payload_bytes
from utils.errors import CheckpointError

CODEBOOKS_FORMAT = 1


def _codebook_modules(tokenizer: nn.Module) -> dict[str, nn.Module]:
    return {"spectral": tokenizer.spectral_vqvae.quantizer, "spatial": tokenizer.spatial_vqvae.quantizer}


def save_codebooks(tokenizer: nn.Module, path: str | Path) -> Path:
    """Write both codebooks of an SSPQTokenizer (code vectors + EMA statistics) atomically to `path`."""
    payload = {"format": CODEBOOKS_FORMAT, "K_s": tokenizer.K_s, "K_x": tokenizer.K_x,
               **{name: {k: v.detach().cpu() for k, v in mod.state_dict().items()}
                  for name, mod in _codebook_modules(tokenizer).items()}}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp), payload_bytes(payload))


def load_codebooks(tokenizer: nn.Module, path: str | Path) -> None:
    """Load codebooks written by `save_codebooks` into `tokenizer`; sizes must match it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: codebook file not found (SSPQTokenizer.save_codebooks writes it)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt file
        raise CheckpointError(f"{path}: not a readable codebook file ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CODEBOOKS_FORMAT:
        raise CheckpointError(f"{path}: not a codebook file of format {CODEBOOKS_FORMAT}")
    if (payload["K_s"], payload["K_x"]) != (tokenizer.K_s, tokenizer.K_x):
        raise CheckpointError(f"{path}: codebooks of sizes K_s={payload['K_s']}, K_x={payload['K_x']} do not "
                              f"fit this tokenizer (K_s={tokenizer.K_s}, K_x={tokenizer.K_x})")
    for name, mod in _codebook_modules(tokenizer).items():
        try:
            mod.load_state_dict(payload[name])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: {name} codebook does not fit this tokenizer: "
                                  f"{str(err).splitlines()[0]}") from None
