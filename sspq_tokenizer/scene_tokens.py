"""Joint ids (and cell spectra) of a scene's tokenizer windows, streamed batch by batch from the cube.

    coords = HSIPatchExtractor(tokenizer.patch_size, stride).inside_coords(H, W)     # (N, 2)
    ids, spectra = tokenize_windows(tokenizer, cube, coords, prep.transform, 256, device)  # (N, T), (N, T, B)

Used by Stage 2 (encoder/pretrain_mtp.py: the token grids it trains on) and Stage 3 (anomaly/adapt.py).
The tokenizer runs frozen (`frozen_tokenize`): its VQ codebooks do not move.
"""

from __future__ import annotations

import torch
from torch import nn

from data.datasets import HSIPatchExtractor
from sspq_tokenizer.joint_tokenizer import frozen_tokenize


@torch.no_grad()
def tokenize_windows(tokenizer: nn.Module, cube, coords, transform=None, batch_size: int = 256,
                     device: torch.device | str = "cpu", spectra_dtype: torch.dtype | None = torch.float32
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Joint ids (N, T) and cell spectra (N, T, B) in `spectra_dtype` (None: no spectra) of the tokenizer
    patches at top-left `coords` (N, 2) of `cube` (H, W, B_raw), prepared by `transform` batch by batch;
    both on the CPU (the tokenizer runs on `device`)."""
    ids, spectra = [], []
    extractor = HSIPatchExtractor(tokenizer.patch_size, tokenizer.patch_size)
    for patches, _ in extractor.iter_batches(cube, batch_size, transform, coords):
        batch = torch.from_numpy(patches).to(device)  # (n, B, S, S)
        ids.append(frozen_tokenize(tokenizer, batch).cpu())  # (n, T)
        if spectra_dtype is not None:
            spectra.append(tokenizer.spectral_vqvae.cells(batch).to(spectra_dtype).cpu())  # (n, T, B)
    return torch.cat(ids), (torch.cat(spectra) if spectra_dtype is not None else None)
