"""A tokenizer checkpoint (sspq_tokenizer/train_tokenizer.py writes it) back to a model.

    tokenizer, ckpt = load_tokenizer("checkpoints/tokenizer/best.pth")   # eval mode; ckpt["config"] is the
                                                                         # TokenizerConfig dict (preprocessing too)
The checkpoint describes itself: its stored config rebuilds the model (docs/design.md "Self-describing checkpoints").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from utils.checkpoint import describe_load_error, load_checkpoint
from utils.config import from_dict
from utils.errors import CheckpointError, ConfigError


def load_tokenizer(path: str | Path, map_location: str | torch.device = "cpu", ckpt: dict[str, Any] | None = None) -> tuple[SSPQTokenizer, dict[str, Any]]:
    """(tokenizer in eval mode, checkpoint dict), the model rebuilt from the checkpoint's own config;
    `ckpt`: its dict when the caller has read it already."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(path, "tokenizer", map_location=map_location)
    try:
        cfg = from_dict(TokenizerConfig, ckpt["config"])
        cfg.validate()
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored config is not a valid tokenizer config: {err}") from None
    model = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the model its config describes "
                              f"(num_bands {cfg.num_bands}, K_s {cfg.K_s}, K_x {cfg.K_x}): "
                              f"{describe_load_error(err)}; re-create the checkpoint") from None
    return model.eval(), ckpt
