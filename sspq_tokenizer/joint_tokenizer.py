"""SSPQTokenizer (spec 4.3): spectral + spatial VQ-VAE codes joined per token-grid position.

    tok, ckpt = load_tokenizer("checkpoints/tokenizer/best.pth")   # sspq_tokenizer/checkpoint.py; eval mode
    with torch.inference_mode():
        out = tok(patches)                        # patches (N, B, S, S)
        ids = out["joint_ids"]                    # (N, T), T = g*g, joint_id = k + K_s * m
        recon = tok.decode_joint_ids(ids)         # (N, B, S, S)
        err = tok.pixel_recon_error(patches)      # (N, S, S)

In train mode the VQ codebooks move inside `forward` (EMA); tokenise only under `eval()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sspq_tokenizer.spatial_vqvae import SpatialCNNVQVAE
from sspq_tokenizer.spectral_vqvae import SpectralTCNVQVAE
from utils.errors import DataError


class SSPQTokenizer(nn.Module):
    """Joint spectral-spatial tokenizer on a g x g token grid (docs/design.md "Token grid").

    spectral_cfg: SpectralTCNVQVAE kwargs (num_bands, hidden_dim, codebook_size, num_layers, kernel_size,
        commitment_beta, cell_size, token_mode, ...); spatial_cfg: SpatialCNNVQVAE kwargs (num_bands,
        hidden_dim, codebook_size, encoder_channels, commitment_beta, patch_size, downsample, ...).
    Both reconstructions are fused by a 1x1 conv over their concatenation, initialised to their average
    and trained on detached inputs (the branches stay independent VQ-VAEs, spec 4).
    """

    def __init__(self, spectral_cfg: dict[str, Any], spatial_cfg: dict[str, Any]) -> None:
        super().__init__()
        self.spectral_vqvae = SpectralTCNVQVAE(**spectral_cfg)
        self.spatial_vqvae = SpatialCNNVQVAE(**spatial_cfg)
        spec, spat = self.spectral_vqvae, self.spatial_vqvae
        if spec.num_bands != spat.num_bands:
            raise ValueError(f"spectral num_bands {spec.num_bands} != spatial num_bands {spat.num_bands}")
        if spec.cell_size != spat.downsample:
            raise ValueError(f"spectral cell_size {spec.cell_size} != spatial downsample {spat.downsample}: "
                             "both branches must code the same token grid")
        self.K_s = spec.codebook_size
        self.K_x = spat.codebook_size
        self.joint_vocab_size = self.K_s * self.K_x
        self.num_bands = spat.num_bands
        self.patch_size = spat.patch_size
        self.grid_size = spat.grid_size
        self.num_tokens = self.grid_size ** 2
        b = self.num_bands
        self.fusion = nn.Conv2d(2 * b, b, 1)
        with torch.no_grad():
            eye = torch.eye(b).reshape(b, b, 1, 1)
            self.fusion.weight.copy_(torch.cat([eye, eye], dim=1) * 0.5)  # (B, 2B, 1, 1): the average
            self.fusion.bias.zero_()

    # ------------------------------------------------------------------ helpers
    def _check_patches(self, patches: torch.Tensor) -> None:
        want = (self.num_bands, self.patch_size, self.patch_size)
        if patches.ndim != 4 or tuple(patches.shape[1:]) != want:
            raise DataError(f"tokenizer expects patches (N, {want[0]}, {want[1]}, {want[2]}) "
                            f"(num_bands, patch_size from its config), got {tuple(patches.shape)}")

    def _spectral_ids_on_grid(self, indices: torch.Tensor) -> torch.Tensor:
        """Spectral codes (N, T_s) -> (N, T); in patch mode the single code is repeated over the grid."""
        return indices.expand(-1, self.num_tokens) if indices.shape[1] == 1 else indices

    def _spectra_to_pixels(self, cell_spectra: torch.Tensor) -> torch.Tensor:
        """Cell spectra (N, T, B) (or (N, 1, B) in patch mode) -> (N, B, S, S), each cell filling its pixels."""
        n, t, b = cell_spectra.shape
        if t == 1:
            return cell_spectra.reshape(n, b, 1, 1).expand(n, b, self.patch_size, self.patch_size)
        g, d = self.grid_size, self.patch_size // self.grid_size
        grid = cell_spectra.transpose(1, 2).reshape(n, b, g, g)  # (N, B, g, g)
        return grid.repeat_interleave(d, dim=2).repeat_interleave(d, dim=3)  # (N, B, S, S)

    def _fuse(self, recon_s: torch.Tensor, recon_x: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([recon_s, recon_x], dim=1))  # (N, 2B, S, S) -> (N, B, S, S)

    # ------------------------------------------------------------------ API
    def forward(self, patches: torch.Tensor, return_recon: bool = False) -> dict[str, Any]:
        """Patches (N, B, S, S) -> dict:

        joint_ids (N, T), spectral_ids (N, T), spatial_ids (N, T) int64; loss () = spectral + spatial +
        fusion recon loss; loss_dict {spectral_*, spatial_*, fusion_recon_loss, loss} scalars; with
        `return_recon`: recon_s, recon_x, recon (fused, decoded from the codes) and recon_continuous
        (fused decode of the un-quantised latents), all (N, B, S, S).
        """
        self._check_patches(patches)
        spec = self.spectral_vqvae(patches, return_continuous=return_recon)
        spat = self.spatial_vqvae(patches, return_continuous=return_recon)
        k = self._spectral_ids_on_grid(spec.indices)  # (N, T)
        m = spat.indices  # (N, T)
        recon_s = self._spectra_to_pixels(spec.recon)  # (N, B, S, S)
        recon = self._fuse(recon_s.detach(), spat.recon.detach())
        fusion_loss = F.mse_loss(recon, patches)
        loss_dict = {f"spectral_{key}": val for key, val in spec.loss_dict.items()}
        loss_dict.update({f"spatial_{key}": val for key, val in spat.loss_dict.items()})
        loss = spec.loss_dict["loss"] + spat.loss_dict["loss"] + fusion_loss
        loss_dict.update(fusion_recon_loss=fusion_loss, loss=loss)
        out: dict[str, Any] = {"joint_ids": k + self.K_s * m, "spectral_ids": k, "spatial_ids": m,
                               "loss": loss, "loss_dict": loss_dict}
        if return_recon:
            out.update(recon_s=recon_s, recon_x=spat.recon, recon=recon,
                       recon_continuous=self._fuse(self._spectra_to_pixels(spec.recon_continuous),
                                                   spat.recon_continuous))
        return out

    def tokenize(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (N, B, S, S) -> joint ids (N, T) without decoding (the cheap path for Stages 2/3).

        Always fp32, also inside an autocast region: a bf16 encoder output lands in other codes (over half
        the ids changed in a test), and Stages 2 and 3 must see the ids the same way.
        """
        self._check_patches(patches)
        return self.joint_ids(self.spectral_codes(self.spectral_vqvae.cells(patches.float())), patches)

    @property
    def spectral_cell(self) -> int:
        """Side in pixels of the square a spectral code summarises: the token cell, or the patch in patch mode."""
        return self.patch_size if self.spectral_vqvae.token_mode == "patch" else self.spectral_vqvae.cell_size

    def spectral_codes(self, cells: torch.Tensor) -> torch.Tensor:
        """Cell mean spectra (N, T_s, B) -> spectral codes (N, T_s), fp32 (see `tokenize`). A code depends on its
        cell's pixels only, so a scene's codes can be computed once per cell and shared by overlapping patches."""
        spec = self.spectral_vqvae
        with torch.autocast(cells.device.type, enabled=False):
            return spec.quantizer(spec.encode(cells.float())).indices  # (N, T_s)

    def joint_ids(self, spectral: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Spectral codes (N, T_s) of `patches` (N, B, S, S) joined with the patches' spatial codes: (N, T)."""
        spat = self.spatial_vqvae
        with torch.autocast(patches.device.type, enabled=False):
            m = spat.quantizer(spat.encode(patches.float())).indices  # (N, T)
        return self._spectral_ids_on_grid(spectral) + self.K_s * m  # (N, T)

    def split_joint_ids(self, joint_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """joint ids (...) -> (k spectral, m spatial), each (...); raises on ids outside [0, K_s*K_x)."""
        if joint_ids.numel() and (int(joint_ids.min()) < 0 or int(joint_ids.max()) >= self.joint_vocab_size):
            raise ValueError(f"joint ids must lie in [0, {self.joint_vocab_size}), got "
                             f"[{int(joint_ids.min())}, {int(joint_ids.max())}]")
        return joint_ids % self.K_s, joint_ids // self.K_s

    def decode_joint_ids(self, joint_ids: torch.Tensor) -> torch.Tensor:
        """Joint ids (N, T) -> fused reconstruction (N, B, S, S) from the two codebooks."""
        if joint_ids.ndim != 2 or joint_ids.shape[1] != self.num_tokens:
            raise ValueError(f"joint ids must be (N, {self.num_tokens}), got {tuple(joint_ids.shape)}")
        k, m = self.split_joint_ids(joint_ids)  # (N, T) each
        with torch.autocast(joint_ids.device.type, enabled=False):  # fp32, as `tokenize`
            recon_s = self._spectra_to_pixels(self.spectral_vqvae.decode_indices(k))  # (N, T, B) -> (N, B, S, S)
            recon_x = self.spatial_vqvae.decode_indices(m)  # (N, B, S, S)
            return self._fuse(recon_s, recon_x)

    def pixel_recon_error(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (N, B, S, S) -> (N, S, S): mean over bands of the squared error of the decode from codes."""
        recon = self.decode_joint_ids(self.tokenize(patches))  # (N, B, S, S), fp32
        return (recon - patches.float()).pow(2).mean(dim=1)  # (N, S, S)

    # ------------------------------------------------------------------ spec 4.3 entry points
    def save_codebooks(self, path: str | Path) -> Path:
        """Write both codebooks atomically to `path` (the file format: sspq_tokenizer/codebooks.py)."""
        from sspq_tokenizer.codebooks import save_codebooks  # the file I/O lives there

        return save_codebooks(self, path)

    def load_codebooks(self, path: str | Path) -> None:
        """Load codebooks written by `save_codebooks`; sizes must match this tokenizer."""
        from sspq_tokenizer.codebooks import load_codebooks  # the file I/O lives there

        load_codebooks(self, path)


def frozen_tokenize(tokenizer: nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """(N, B, S, S) -> joint ids (N, T): the one tokenisation path of Stages 2 and 3 (`SSPQTokenizer.tokenize`,
    no decoders), with the tokenizer in eval mode and no gradients: the VQ codebook must not move (its library
    updates codes inside forward in train mode). The train flag is restored."""
    was_training = tokenizer.training
    tokenizer.eval()
    try:
        with torch.no_grad():
            joint_ids = tokenizer.tokenize(patches)  # (N, T)
    finally:
        tokenizer.train(was_training)
    return joint_ids
