"""An encoder checkpoint (encoder/pretrain_mtp.py writes it) back to a model.

    encoder, ckpt = load_encoder("checkpoints/encoder/universal_hsi_encoder.pth")   # eval mode

The checkpoint describes itself: `config["encoder_args"]` holds the constructor kwargs
(`HSIEncoderBERT.encoder_args()`), so the model is rebuilt offline (docs/design.md "Self-describing checkpoints").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from encoder.hsi_bert_encoder import HSIEncoderBERT
from utils.checkpoint import describe_load_error, load_checkpoint
from utils.errors import CheckpointError


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu", ckpt: dict[str, Any] | None = None) -> tuple[HSIEncoderBERT, dict[str, Any]]:
    """(encoder in eval mode, checkpoint dict) from an encoder checkpoint; `ckpt`: its dict when the caller
    has read it already."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(path, "encoder", map_location=map_location)
    args = ckpt["config"].get("encoder_args")
    if not isinstance(args, dict):
        raise CheckpointError(f"{path}: the encoder checkpoint records no encoder_args; re-create it")
    encoder = HSIEncoderBERT(**args)
    try:
        encoder.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: state_dict does not fit its encoder_args: "
                              f"{describe_load_error(err)}; re-create the checkpoint") from None
    return encoder.eval(), ckpt
