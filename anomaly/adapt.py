"""Label-free fitting of the pre-trained encoder to the scored scene (spec 6: "frozen or LoRA-tuned").

`adapt_steps` steps of the pre-training objective (masked tokens + predicted spectra, with its mask family:
blind-spot blocks and guard rings) on windows of the scored scene itself, updating the row of the domain embedding
that the scene is scored under and, when the encoder carries peft LoRA adapters (`use_lora`), those adapters. Each
masked token is predicted from its context only, as the context heads score it, so the fit learns the scene's
background, not its targets: a pixel never sees itself (docs/design.md "Fitting to the scored scene is training
without labels"). No label is read.

    windows = scene_windows(tokenizer, cube, prep.transform, stride=4, batch_size=64, device=cpu)
    losses = fit_to_scene(encoder, *windows, domain_id=3, steps=200, lr=1e-2, batch_size=32, seed=66)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from anomaly.lora import ADAPTER_KEY
from data.datasets import HSIPatchExtractor
from sspq_tokenizer.scene_tokens import tokenize_windows
from utils.errors import DataError, DivergenceError


def scene_windows(tokenizer, cube, transform: Callable | None, stride: int, batch_size: int,
                  device: torch.device, valid: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(joint ids (N, T), cell spectra (N, T, B)) of the scene's patches inside the image, `stride` apart, free of
    no-data pixels (`valid` (H, W) False) when a mask is given."""
    extractor = HSIPatchExtractor(tokenizer.patch_size, stride)
    coords = extractor.with_data(extractor.inside_coords(*cube.shape[:2]), valid)  # (N, 2)
    if len(coords) == 0:
        raise DataError("scene fit: no window of the scene is free of no-data pixels")
    ids, spectra = tokenize_windows(tokenizer, cube, coords, transform, batch_size, device)
    return ids.to(device), spectra.to(device)


@torch.enable_grad()
def fit_to_scene(encoder, joint_ids: torch.Tensor, spectra: torch.Tensor, domain_id: int, steps: int,
                 lr: float, batch_size: int, seed: int) -> list[float]:
    """Fit row `domain_id` of `encoder.domain_embedding`, and the encoder's LoRA adapters when it has any, by `steps`
    Adam steps on windows (joint ids (N, T), cell spectra (N, T, B)); everything else stays frozen and the encoder
    in eval mode (no dropout; the other rows get no gradient, so Adam leaves them bit-identical). Returns the loss of
    each step; a non-finite loss is an error."""
    table = encoder.domain_embedding.weight  # (num_domains, H)
    adapters = [p for name, p in encoder.named_parameters() if ADAPTER_KEY in name]
    fitted = [table, *adapters]
    was_training = encoder.training
    encoder.eval()
    for p in fitted:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(fitted, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    try:
        for step in range(steps):
            index = torch.randint(0, len(joint_ids), (min(batch_size, len(joint_ids)),), generator=generator)
            tokens = joint_ids[index]  # (b, T)
            mask = encoder.sample_mask(tokens.cpu(), generator).to(tokens.device)  # (b, T)
            domains = torch.full((len(tokens),), domain_id, dtype=torch.long, device=tokens.device)  # (b,)
            loss, _, _ = encoder(tokens, domains, pretrain=True, mask=mask, spectra=spectra[index])
            if not torch.isfinite(loss):
                raise DivergenceError(f"scene fit: the loss is {float(loss)} at step {step + 1} of {steps}; nothing "
                                      f"was written; lower adapt_lr ({lr}) and run again")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for p in fitted:
            p.requires_grad_(False)
        encoder.train(was_training)
    return losses
