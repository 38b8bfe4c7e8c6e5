"""Stage 3's head objective: the one-class head's loss (Deep SVDD, or BCE when supervised). The encoder's own
fit to the scene (domain row, LoRA adapters) is the pre-training objective, anomaly/adapt.py.

    center_from(detector, [embeddings(detector, ids, domains)])
    losses = training_losses(detector, ids, domains, labels=None)   # {"one_class", "loss"}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_labels(detector, gt_patches: torch.Tensor) -> torch.Tensor:
    """0/1 gt patches (N, S, S) -> labels shaped like the one-class score: (N, T) per token cell (1 if any pixel of
    the cell is anomalous), or (N, 1) per patch (1 if any pixel is)."""
    gt = gt_patches.float()
    if not detector.one_class_head.per_token:
        return gt.amax(dim=(1, 2))[:, None]  # (N, 1)
    grid = detector.universal_model.tokenizer.grid_size
    pooled = F.adaptive_max_pool2d(gt[:, None], grid)  # (N, 1, g, g)
    return pooled.reshape(gt.shape[0], grid * grid)  # (N, T)


def training_losses(detector, joint_ids: torch.Tensor, domain_ids: torch.Tensor, labels: torch.Tensor | None = None,
                    hidden: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{"one_class": SVDD or BCE loss, "loss": the same}: the loss the head's training steps minimise.

    Takes joint ids (N, T): the tokenizer is frozen, so a training scene is tokenised once, not once per epoch.
    `hidden` (N, T, H): the embeddings of `joint_ids` when the caller holds them (the encoder never changes while
    the head trains).
    """
    if detector.one_class_head is None:
        raise RuntimeError("nothing to train: no one-class head")
    if hidden is None:
        hidden = detector.universal_model.encoder(joint_ids, domain_ids, pretrain=False)  # (N, T, H)
    loss = detector.one_class_head.loss(hidden, labels)
    return {"one_class": loss, "loss": loss}


@torch.no_grad()
def embeddings(detector, joint_ids: torch.Tensor, domain_ids: torch.Tensor) -> torch.Tensor:
    """The encoder's embeddings (N, T, H) of joint ids (N, T) under domains (N,), in eval mode (no dropout)."""
    was_training = detector.training
    detector.train(False)
    try:
        return detector.universal_model.encoder(joint_ids, domain_ids, pretrain=False)
    finally:
        detector.train(was_training)


@torch.no_grad()
def center_from(detector, hidden_batches) -> None:
    """Fix the SVDD centre (and the embeddings' mean) from the initial embeddings: a sequence of (N, T, H)."""
    detector.one_class_head.init_center(hidden_batches)
