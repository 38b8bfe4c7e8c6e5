"""The one place that touches `vector_quantize_pytorch`: an EMA vector quantiser with a fixed output type.

    vq = Quantizer(dim=32, codebook_size=64, commitment_beta=0.25)
    out = vq(z)                 # z (N, L, D) -> QuantizerOutput(quantized (N, L, D), indices (N, L), commit_loss ())
    codes = vq.lookup(out.indices)   # (N, L, D), exactly the codebook rows

The codebook is updated by exponential moving averages inside `forward` while the module is in
train mode (and k-means-initialised from the first batch it sees); in eval mode it does not move.
Tokenising for later stages therefore runs under `eval()` and `torch.inference_mode()`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

KMEANS_ITERS = 10  # k-means passes of the codebook initialisation on the first batch


class QuantizerOutput(NamedTuple):
    """quantized (N, L, D) (straight-through in train mode), indices (N, L) int64 in [0, K),
    commit_loss () = commitment_beta * mean ||z - sg(quantized)||^2."""

    quantized: torch.Tensor
    indices: torch.Tensor
    commit_loss: torch.Tensor


class VQVAEOutput(NamedTuple):
    """What each VQ-VAE branch returns (same type in train and eval mode).

    recon: decoded from the quantised codes -- (N, T, B) spectra per token for the spectral branch,
           (N, B, S, S) for the spatial branch.
    recon_continuous: the same decoder applied to the un-quantised latent (a diagnostic: how much the
           quantisation costs), or None when not asked for.
    quantized: (N, T, D) code vectors per token; indices: (N, T) int64 in [0, K).
    loss_dict: scalar tensors `recon_loss`, `commitment_loss`, `vq_loss` (the quantiser's whole loss;
           EMA codebooks take no gradient, so it equals `commitment_loss`) and `loss` = recon + vq.
    The fields also read by name as in a dict (spec 4.3: `spec_out["indices"]`, `spec_out.get("recon")`).
    """

    recon: torch.Tensor
    recon_continuous: torch.Tensor | None
    quantized: torch.Tensor
    indices: torch.Tensor
    loss_dict: dict[str, torch.Tensor]

    def __getitem__(self, key):
        """`out["indices"]` by field name; an int or slice indexes the tuple as usual."""
        if isinstance(key, str):
            if key not in self._fields:
                raise KeyError(f"{key!r}: VQVAEOutput fields are {', '.join(self._fields)}")
            return getattr(self, key)
        return tuple.__getitem__(self, key)

    def get(self, key: str, default=None):
        """dict-style `get` over the field names."""
        return getattr(self, key) if key in self._fields else default


def branch_losses(recon_loss: torch.Tensor, commit_loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss_dict of a VQ-VAE branch (see VQVAEOutput)."""
    return {"recon_loss": recon_loss, "commitment_loss": commit_loss, "vq_loss": commit_loss,
            "loss": recon_loss + commit_loss}


class Quantizer(nn.Module):
    """EMA codebook of `codebook_size` vectors of size `dim`, k-means initialised.

    `dead_code_threshold`: a code whose EMA count of assignments per batch falls below it is reseeded
    from the batch. Keep it small: aggressive reseeding pulls rare (anomalous) codes back onto common
    data (docs/design.md "Lessons from the prototype"). 0 disables reseeding.
    """

    def __init__(self, dim: int, codebook_size: int, commitment_beta: float, ema_decay: float = 0.8,
                 dead_code_threshold: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.commitment_beta = commitment_beta
        self.vq = VectorQuantize(dim=dim, codebook_size=codebook_size, decay=ema_decay, kmeans_init=True,
                                 kmeans_iters=KMEANS_ITERS, threshold_ema_dead_code=dead_code_threshold,
                                 commitment_weight=commitment_beta)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, (K, D)."""
        return self.vq.codebook

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for `indices` (...,) -> (..., D)."""
        return self.codebook[indices]

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z (N, L, D) -> QuantizerOutput. In eval mode `quantized` equals `lookup(indices)` exactly."""
        quantized, indices, commit_loss = self.vq(z)
        if not self.training:
            # the library computes the commitment term only while training; report the same quantity
            commit_loss = F.mse_loss(z.float(), quantized.float()) * self.commitment_beta
        return QuantizerOutput(quantized, indices.long(), commit_loss.reshape(()))


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage statistics of integer codes (any shape): perplexity (exp of the code entropy, at most K),
    `used` (number of distinct codes) and `usage` (share of the K codes that occur)."""
    counts = torch.bincount(indices.reshape(-1).long().cpu(), minlength=codebook_size).double()  # (K,)
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    used = int((counts > 0).sum())
    return {"perplexity": float(entropy.exp()), "used": float(used), "usage": used / codebook_size}
