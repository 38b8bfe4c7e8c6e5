"""Spatial branch (spec 4.2): a 2-D CNN over the patch, one VQ code per token-grid position.

The latent map has the token grid's size g x g (g = patch_size / downsample), so the spatial codes
line up one-to-one with the spectral branch's cells (docs/design.md "Token grid").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sspq_tokenizer.quantizer import Quantizer, VQVAEOutput, branch_losses

SPEC_PATCH_SIZE = 11  # spec 4.4's `patch_size: 11`: the default where a caller uses the spec 4.2 signature


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    # replicate padding: patches are small, zero borders would dominate their edges
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


class SpatialCNNVQVAE(nn.Module):
    """1x1 conv B -> encoder_channels[0], 3x3 conv stack over `encoder_channels`, a d x d stride-d conv
    when downsample d > 1, 1x1 conv to a `hidden_dim` latent (N, D, g, g), LayerNorm without parameters
    over D (keeps the codes in use, see SpectralTCNVQVAE); K_x codes per position;
    a mirrored decoder (transposed conv for the upsampling) back to (N, B, S, S).

    The spec 4.2 signature has no `patch_size`, but the token grid g = patch_size / downsample is fixed by
    it: the decoder reshapes (N, T, D) latents to (N, D, g, g), and SSPQTokenizer takes its patch shape and
    T = g*g (the encoder's sequence length) from here. So it is a keyword with the spec's example value
    (spec 4.4: 11) as default; TokenizerConfig.spatial_cfg() always passes its own."""

    def __init__(self, num_bands: int, hidden_dim: int, codebook_size: int, encoder_channels: list[int],
                 commitment_beta: float, patch_size: int = SPEC_PATCH_SIZE, downsample: int = 1, ema_decay: float = 0.8,
                 dead_code_threshold: float = 1.0) -> None:
        super().__init__()
        if not encoder_channels:
            raise ValueError("encoder_channels must name at least one layer width")
        if downsample < 1 or patch_size % downsample:
            raise ValueError(f"patch_size {patch_size} must be a multiple of downsample {downsample}")
        self.num_bands = num_bands
        self.patch_size = patch_size
        self.downsample = downsample
        self.grid_size = patch_size // downsample
        self.codebook_size = codebook_size
        chans = list(encoder_channels)
        enc: list[nn.Module] = [nn.Conv2d(num_bands, chans[0], 1), nn.GELU()]
        for c_in, c_out in zip(chans, chans[1:]):
            enc += [_conv3x3(c_in, c_out), nn.GELU()]
        enc += [_conv3x3(chans[-1], chans[-1]), nn.GELU()]
        if downsample > 1:
            enc += [nn.Conv2d(chans[-1], chans[-1], downsample, stride=downsample), nn.GELU()]
        enc += [nn.Conv2d(chans[-1], hidden_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.latent_norm = nn.LayerNorm(hidden_dim, elementwise_affine=False)
        dec: list[nn.Module] = [nn.Conv2d(hidden_dim, chans[-1], 1), nn.GELU()]
        if downsample > 1:
            dec += [nn.ConvTranspose2d(chans[-1], chans[-1], downsample, stride=downsample), nn.GELU()]
        dec += [_conv3x3(chans[-1], chans[-1]), nn.GELU()]
        for c_in, c_out in zip(chans[::-1], chans[::-1][1:]):
            dec += [_conv3x3(c_in, c_out), nn.GELU()]
        dec += [nn.Conv2d(chans[0], num_bands, 1)]
        self.decoder = nn.Sequential(*dec)
        self.quantizer = Quantizer(hidden_dim, codebook_size, commitment_beta, ema_decay, dead_code_threshold)
        self.receptive_radius = len(chans)  # pixels: each 3x3 conv of the encoder widens the field by one

    @property
    def guard_radius(self) -> int:
        """Token-grid distance within which a spatial code can have seen a given cell's pixels."""
        return -(-self.receptive_radius // self.downsample)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Patches (N, B, S, S) -> continuous latents (N, T, D), positions row-major over the g x g grid."""
        return self.latent_norm(self.encoder(x).flatten(2).transpose(1, 2))  # (N, D, g, g) -> (N, g*g, D)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Latents (N, T, D) -> patches (N, B, S, S)."""
        n, t, d = quantized.shape
        fmap = quantized.transpose(1, 2).reshape(n, d, self.grid_size, self.grid_size)  # (N, D, g, g)
        return self.decoder(fmap)  # (N, B, S, S)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (N, T) -> patches (N, B, S, S), from the codebook rows."""
        return self.decode(self.quantizer.lookup(indices))  # (N, T, D) -> (N, B, S, S)

    def forward(self, x: torch.Tensor, return_continuous: bool = False) -> VQVAEOutput:
        """Patches (N, B, S, S) -> VQVAEOutput with recon (N, B, S, S)."""
        z = self.encode(x)  # (N, T, D)
        q = self.quantizer(z)
        recon = self.decode(q.quantized)  # (N, B, S, S)
        recon_continuous = self.decode(z) if return_continuous else None
        losses = branch_losses(F.mse_loss(recon, x), q.commit_loss)
        return VQVAEOutput(recon, recon_continuous, q.quantized, q.indices, losses)
