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
from utils.checkpoint import check_parent, describe_load_error, load_checkpoint, locate_parent, read_checkpoint
from utils.errors import CheckpointError


def read_encoder_chain(encoder_ckpt: str | Path, tokenizer_ckpt: str | Path | None = None
                       ) -> tuple[dict[str, Any], dict[str, str], Path, dict[str, Any], dict[str, str]]:
    """An encoder checkpoint and the tokenizer checkpoint it records (or `tokenizer_ckpt`, a copy elsewhere), each read
    and hashed once, the link checked by sha256: (encoder ckpt, its record, tokenizer path, tokenizer ckpt, its record)."""
    enc_ckpt, enc_record = read_checkpoint(encoder_ckpt, "encoder")
    tok_path = Path(tokenizer_ckpt) if tokenizer_ckpt is not None else locate_parent(enc_ckpt, encoder_ckpt, "tokenizer")
    tok_ckpt, tok_record = read_checkpoint(tok_path, "tokenizer")
    check_parent(enc_ckpt, encoder_ckpt, tok_path, tok_record)
    return enc_ckpt, enc_record, tok_path, tok_ckpt, tok_record


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
