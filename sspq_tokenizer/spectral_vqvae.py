"""Spectral branch (spec 4.1): a TCN along the band axis, one VQ code per token-grid cell.

Token grid (docs/design.md "Token grid"): a patch (N, B, S, S) is cut into g x g cells of d x d pixels (g = S / d);
each cell's mean spectrum (B,) is one token. With `token_mode="patch"` (the spec's literal mode)
the whole patch is one cell (T_s = 1); the joint tokenizer then repeats that code over the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sspq_tokenizer.choices import TOKEN_MODES
from sspq_tokenizer.quantizer import Quantizer, VQVAEOutput, branch_losses


class ResidualTCNBlock(nn.Module):
    """x + GELU(dilated Conv1d(x)), length preserved (odd kernel)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size // 2))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.conv(x))  # (M, C, B)


class SpectralTCNVQVAE(nn.Module):
    """Encode each cell spectrum with a dilated residual TCN, quantise it with K_s codes, decode with an MLP.

    Encoder: Conv1d(1 -> hidden_dim, kernel = stride = band_stride) (groups of `band_stride` adjacent
    bands become one TCN step: B / band_stride steps, the main cost lever on a CPU), then `num_layers`
    residual blocks with dilations 1, 2, 4, ... (receptive field
    band_stride * (1 + (kernel_size - 1) * (2**num_layers - 1)) bands), adaptive average pooling of the
    step axis to `pooled_length` positions, a linear map to a `hidden_dim` latent vector and a LayerNorm
    without parameters (fixes the latent scale, so the k-means-initialised codes keep covering the
    latents while the encoder trains; without it most codes fall out of use within a few epochs).
    Decoder: MLP hidden_dim -> 4*hidden_dim -> 4*hidden_dim -> num_bands.
    """

    def __init__(self, num_bands: int, hidden_dim: int, codebook_size: int, num_layers: int, kernel_size: int,
                 commitment_beta: float, cell_size: int = 1, token_mode: str = "grid", band_stride: int = 1,
                 pooled_length: int = 8,
                 ema_decay: float = 0.8, dead_code_threshold: float = 1.0) -> None:
        super().__init__()
        if token_mode not in TOKEN_MODES:
            raise ValueError(f"token_mode must be one of {TOKEN_MODES}, got {token_mode!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (length-preserving padding), got {kernel_size}")
        if band_stride < 1 or num_bands % band_stride:
            raise ValueError(f"num_bands {num_bands} must be a multiple of band_stride {band_stride}")
        self.num_bands = num_bands
        self.cell_size = cell_size
        self.token_mode = token_mode
        self.codebook_size = codebook_size
        self.inp = nn.Conv1d(1, hidden_dim, band_stride, stride=band_stride)
        self.blocks = nn.Sequential(*[ResidualTCNBlock(hidden_dim, kernel_size, 2 ** i) for i in range(num_layers)])
        self.pool = nn.AdaptiveAvgPool1d(pooled_length)
        self.to_latent = nn.Linear(hidden_dim * pooled_length, hidden_dim)
        self.latent_norm = nn.LayerNorm(hidden_dim, elementwise_affine=False)
        width = 4 * hidden_dim
        self.decoder = nn.Sequential(nn.Linear(hidden_dim, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                     nn.Linear(width, num_bands))
        self.quantizer = Quantizer(hidden_dim, codebook_size, commitment_beta, ema_decay, dead_code_threshold)

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """Patches (N, B, S, S) -> mean spectrum per token cell (N, T_s, B), cells row-major."""
        if self.token_mode == "patch":
            return x.mean(dim=(-1, -2)).unsqueeze(1)  # (N, 1, B)
        pooled = F.avg_pool2d(x, self.cell_size)  # (N, B, g, g)
        return pooled.flatten(2).transpose(1, 2)  # (N, g*g, B)

    def encode(self, cells: torch.Tensor) -> torch.Tensor:
        """Cell spectra (N, T_s, B) -> continuous latents (N, T_s, D)."""
        n, t, b = cells.shape
        h = self.blocks(self.inp(cells.reshape(n * t, 1, b)))  # (N*T_s, H, B / band_stride)
        h = self.pool(h).flatten(1)  # (N*T_s, H*P)
        return self.latent_norm(self.to_latent(h)).reshape(n, t, -1)  # (N, T_s, D)

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        """Latents (N, T_s, D) -> cell spectra (N, T_s, B)."""
        return self.decoder(quantized)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (N, T) -> cell spectra (N, T, B), from the codebook rows."""
        return self.decode(self.quantizer.lookup(indices))  # (N, T, D) -> (N, T, B)

    def forward(self, x: torch.Tensor, return_continuous: bool = False) -> VQVAEOutput:
        """Patches (N, B, S, S) -> VQVAEOutput with recon (N, T_s, B) against the cell means."""
        cells = self.cells(x)  # (N, T_s, B)
        z = self.encode(cells)  # (N, T_s, D)
        q = self.quantizer(z)
        recon = self.decode(q.quantized)  # (N, T_s, B)
        recon_continuous = self.decode(z) if return_continuous else None
        losses = branch_losses(F.mse_loss(recon, cells), q.commit_loss)
        return VQVAEOutput(recon, recon_continuous, q.quantized, q.indices, losses)
