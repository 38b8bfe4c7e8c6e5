"""Masks for masked-token prediction on a g x g token grid (spec 5.1, DESIGN 1 and 10).

Tokens are `(N, T)` row-major over a `g x g` grid (`T = g*g`); masks are bool, `True = masked`.

- `mask_tokens(..., strategy="structured")`: training masks made of *units*, each unit either
  * a spatial unit: a run of row-major indices inside one grid row, grown to its 4-neighbours on the grid, or
  * a spectral segment: every position of the row whose spectral code `k = joint_id % K_s` equals a sampled code
    (needs `spectral_codebook_size`; without it every unit is spatial).
  Units are taken in random order until exactly `round(mask_ratio * T)` positions (at least 1) are masked;
  the last unit is cut to fit. A `spectral_share` of that budget comes from spectral segments.
  Implementation: every unit gets a random priority, a position takes the smallest priority of the units
  covering it, and the lowest-priority positions are masked (`topk`) -- that is the sequential procedure,
  vectorised over the batch.
- `mask_tokens(..., strategy="random")`: the same number of positions, uniformly at random.
- `scoring_masks(grid_size, block)`: a deterministic partition for scoring: every position is masked in
  exactly one of up to 4 masks, and masked cells come in `block x block` squares set in a checkerboard,
  so an object that lies inside one block is masked whole and is predicted from context outside it
  (DESIGN 10: single-token masks let a 5-pixel object predict itself).
"""

from __future__ import annotations

import math

import torch

from encoder.config import STRATEGIES  # mask_strategy values: one list, which the config validates with

IGNORE_INDEX = -100  # label of positions that are not masked (torch cross_entropy's ignore_index)


def num_masked(num_tokens: int, mask_ratio: float) -> int:
    """Masked positions per row: round(mask_ratio * T), at least 1 and at most T."""
    return min(num_tokens, max(1, round(mask_ratio * num_tokens)))


def _lowest(priority: torch.Tensor, count: int) -> torch.Tensor:
    """(N, T) bool: True at the `count` smallest priorities of each row."""
    mask = torch.zeros_like(priority, dtype=torch.bool)  # (N, T)
    if count > 0:
        idx = priority.topk(count, dim=1, largest=False).indices  # (N, count)
        mask.scatter_(1, idx, True)
    return mask


def _grow_to_neighbours(cover: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Add the 4-neighbours on the grid to every covered position: (..., T) bool -> (..., T) bool."""
    grid = cover.reshape(*cover.shape[:-1], grid_size, grid_size)  # (..., g, g)
    grown = grid.clone()
    grown[..., 1:, :] |= grid[..., :-1, :]  # neighbour above
    grown[..., :-1, :] |= grid[..., 1:, :]  # neighbour below
    grown[..., :, 1:] |= grid[..., :, :-1]  # neighbour left
    grown[..., :, :-1] |= grid[..., :, 1:]  # neighbour right
    return grown.reshape(cover.shape)  # (..., T)


def _spatial_priority(n: int, grid_size: int, budget: int, generator: torch.Generator | None,
                      device: torch.device) -> torch.Tensor:
    """(N, T) priorities from randomly ordered spatial units (row runs grown to their neighbours)."""
    t = grid_size * grid_size
    mean_unit = 3 * (grid_size + 1) / 2 + 2  # cells of a run of mean length grown to its neighbours
    units = max(2, math.ceil(4 * budget / mean_unit))  # enough units to cover the budget ~4 times over
    start = torch.randint(0, t, (n, units, 1), generator=generator, device=device)  # (N, U, 1)
    length = torch.randint(1, grid_size + 1, (n, units, 1), generator=generator, device=device)  # (N, U, 1)
    row_end = (start // grid_size + 1) * grid_size  # (N, U, 1) runs stay inside one grid row
    pos = torch.arange(t, device=device).view(1, 1, t)  # (1, 1, T)
    run = (pos >= start) & (pos < torch.minimum(start + length, row_end))  # (N, U, T)
    cover = _grow_to_neighbours(run, grid_size)  # (N, U, T)
    order = torch.rand(n, units, 1, generator=generator, device=device)  # (N, U, 1) unit priority
    prio = torch.where(cover, order, torch.full_like(order, 2.0)).amin(dim=1)  # (N, T); 2.0 = uncovered
    jitter = torch.rand(n, t, generator=generator, device=device)  # (N, T) cuts the last unit at random
    return prio + 1e-4 * jitter


def _spectral_priority(ids: torch.Tensor, spectral_codebook_size: int,
                       generator: torch.Generator | None) -> torch.Tensor:
    """(N, T) priorities from randomly ordered spectral segments (all positions sharing code k)."""
    n, t = ids.shape
    order = torch.rand(n, spectral_codebook_size, generator=generator, device=ids.device)  # (N, K_s)
    prio = order.gather(1, ids % spectral_codebook_size)  # (N, T)
    jitter = torch.rand(n, t, generator=generator, device=ids.device)  # (N, T)
    return prio + 1e-4 * jitter


def sample_mask(joint_ids: torch.Tensor, mask_ratio: float, strategy: str, grid_size: int | None,
                generator: torch.Generator | None = None, spectral_codebook_size: int | None = None,
                spectral_share: float = 0.25) -> torch.Tensor:
    """(N, T) bool mask with exactly `num_masked(T, mask_ratio)` True per row (see the module docstring).

    Random numbers are drawn on the generator's device (the ids' device when `generator` is None);
    the mask is returned on the ids' device.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"mask strategy {strategy!r}: use one of {STRATEGIES}")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio {mask_ratio}: must lie strictly between 0 and 1")
    if not 0.0 <= spectral_share <= 1.0:
        raise ValueError(f"spectral_share {spectral_share}: must lie in [0, 1]")
    n, t = joint_ids.shape  # (N, T)
    device = generator.device if generator is not None else joint_ids.device
    ids = joint_ids.to(device)
    budget = num_masked(t, mask_ratio)
    if strategy == "random":
        return _lowest(torch.rand(n, t, generator=generator, device=device), budget).to(joint_ids.device)
    if grid_size is None or grid_size * grid_size != t:
        raise ValueError(f"structured masks need the token grid: {t} tokens do not form grid_size={grid_size}^2")
    spectral_budget = 0 if spectral_codebook_size is None else round(spectral_share * budget)
    mask = torch.zeros(n, t, dtype=torch.bool, device=device)  # (N, T)
    if spectral_budget > 0:
        mask = _lowest(_spectral_priority(ids, spectral_codebook_size, generator), spectral_budget)
    prio = _spatial_priority(n, grid_size, budget - spectral_budget, generator, device)  # (N, T)
    prio = prio.masked_fill(mask, math.inf)  # already masked positions are not picked again
    mask |= _lowest(prio, budget - spectral_budget)
    return mask.to(joint_ids.device)


def apply_mask(joint_ids: torch.Tensor, mask: torch.Tensor, mask_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked_input_ids (N, T), labels (N, T)): mask_token_id / original id where masked, id / -100 elsewhere."""
    masked_input_ids = joint_ids.masked_fill(mask, mask_token_id)  # (N, T)
    labels = joint_ids.masked_fill(~mask, IGNORE_INDEX)  # (N, T)
    return masked_input_ids, labels


def mask_tokens(joint_ids: torch.Tensor, mask_ratio: float, strategy: str, grid_size: int | None,
                mask_token_id: int, generator: torch.Generator | None = None,
                spectral_codebook_size: int | None = None,
                spectral_share: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask `joint_ids` (N, T) for masked-token prediction.

    Returns `(masked_input_ids (N, T), labels (N, T), mask (N, T) bool)`: labels hold the original id where
    masked and -100 elsewhere. Pass a seeded `torch.Generator` to reproduce the same masks.
    """
    mask = sample_mask(joint_ids, mask_ratio, strategy, grid_size, generator, spectral_codebook_size,
                       spectral_share)  # (N, T)
    masked_input_ids, labels = apply_mask(joint_ids, mask, mask_token_id)
    return masked_input_ids, labels, mask


def scoring_masks(grid_size: int, block: int) -> torch.Tensor:
    """(M, T) bool, M <= 4: mask index of cell (r, c) is (r // block % 2) * 2 + (c // block % 2).

    Every position is masked in exactly one mask; masks that would be empty (grid smaller than two
    blocks) are left out. `block` must be smaller than `grid_size`, else one mask hides the whole grid
    and there is no context left to predict from.
    """
    if grid_size < 1 or block < 1:
        raise ValueError(f"grid_size {grid_size} and block {block} must be >= 1")
    if grid_size > 1 and block >= grid_size:
        raise ValueError(f"block {block} must be smaller than grid_size {grid_size}: a mask would hide the whole grid")
    r = torch.arange(grid_size).view(-1, 1)  # (g, 1)
    c = torch.arange(grid_size).view(1, -1)  # (1, g)
    index = ((r // block % 2) * 2 + (c // block % 2)).reshape(-1)  # (T,)
    masks = torch.stack([index == m for m in range(4)])  # (4, T)
    return masks[masks.any(dim=1)]  # (M, T)


def guard_ring(mask: torch.Tensor, grid_size: int, radius: int) -> torch.Tensor:
    """(N, T) bool: the positions within Chebyshev distance `radius` of a masked position, outside the mask.

    A spatial code is computed from the pixels within the spatial CNN's receptive field; hiding the codes
    of this ring keeps every code that saw a masked pixel out of the context (the blind spot holds).
    """
    if radius <= 0:
        return torch.zeros_like(mask)
    n, t = mask.shape
    grid = mask.reshape(n, 1, grid_size, grid_size).float()  # (N, 1, g, g)
    grown = torch.nn.functional.max_pool2d(grid, 2 * radius + 1, stride=1, padding=radius) > 0  # (N, 1, g, g)
    return grown.reshape(n, t) & ~mask


def block_mask(n: int, grid_size: int, max_block: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, T) bool: one square block per row, side uniform in [1, max_block], at a uniform position on
    the g x g grid: the family the scoring masks belong to (a block hidden with its guard ring)."""
    side = torch.randint(1, min(max_block, grid_size) + 1, (n, 1, 1), generator=generator, device=device)
    top = (torch.rand(n, 1, 1, generator=generator, device=device) * (grid_size - side + 1)).long()
    left = (torch.rand(n, 1, 1, generator=generator, device=device) * (grid_size - side + 1)).long()
    r = torch.arange(grid_size, device=device).view(1, -1, 1)  # (1, g, 1)
    c = torch.arange(grid_size, device=device).view(1, 1, -1)  # (1, 1, g)
    inside = (r >= top) & (r < top + side) & (c >= left) & (c < left + side)  # (N, g, g)
    return inside.reshape(n, grid_size * grid_size)
