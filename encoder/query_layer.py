"""The last BERT layer evaluated at a few query positions only (the masked-position readout).

The blind-spot heads read the body's last hidden state at the masked positions alone. In the last layer every
position's output depends on all keys and values but on its own query row only, so the layer can be run with
queries (and its attention output, feed-forward and LayerNorms) at the masked positions and keys and values at
every position: the same numbers as the full layer at those rows, for a fraction of the work. The layer's own
submodules are called (with LoRA adapters where `peft` put them), so dropout and training behave as in BERT.

Built for `BertLayer` of an encoder-only BERT with absolute positions (what `HSIEncoderBERT` builds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def readout_slots(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(slots (N, Q) long, valid (N, Q) bool) of a mask (N, T): each row's masked positions in ascending order,
    padded to Q = the largest count per row; `valid` marks the real ones, so that `x[valid]` on an (N, Q, ...)
    tensor follows `mask.nonzero()` order."""
    counts = mask.sum(dim=1)  # (N,)
    width = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (N, T): masked positions first
    slots = order[:, :width]  # (N, Q)
    valid = torch.arange(width, device=mask.device)[None, :] < counts[:, None]  # (N, Q)
    return slots, valid


def layer_at(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Output of `layer` (a BertLayer) at the masked positions: hidden (N, T, H) entering it, mask (N, T) ->
    (M, H) in `mask.nonzero()` order, equal to `layer(hidden)[mask]`."""
    attention = layer.attention.self
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    slots, valid = readout_slots(mask)  # (N, Q) each
    n, q = slots.shape
    query_in = hidden.gather(1, slots[..., None].expand(-1, -1, hidden.shape[-1]))  # (N, Q, H)

    def split(x: torch.Tensor) -> torch.Tensor:  # (N, L, H) -> (N, heads, L, d)
        return x.view(n, x.shape[1], heads, head_size).transpose(1, 2)

    dropout = attention.dropout.p if attention.training else 0.0
    context = F.scaled_dot_product_attention(split(attention.query(query_in)), split(attention.key(hidden)),
                                             split(attention.value(hidden)), dropout_p=dropout)  # (N, heads, Q, d)
    context = context.transpose(1, 2).reshape(n, q, heads * head_size)  # (N, Q, H)
    attended = layer.attention.output(context, query_in)  # (N, Q, H): dense, dropout, residual LayerNorm
    out = layer.output(layer.intermediate(attended), attended)  # (N, Q, H): feed-forward, residual LayerNorm
    return out[valid]  # (M, H)
