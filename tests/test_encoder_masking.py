"""Masks for Stage 2: ratio, labels, contiguity on the grid, spectral segments, reproducibility, scoring partition."""

import pytest
import torch

from encoder.masking import IGNORE_INDEX, mask_tokens, num_masked, scoring_masks

GRID = 11
VOCAB = 4096
K_S = 64


def _ids(n=64, grid=GRID, vocab=VOCAB, seed=0):
    return torch.randint(0, vocab, (n, grid * grid), generator=torch.Generator().manual_seed(seed))


def masked_neighbours(mask: torch.Tensor, grid: int) -> float:
    """Mean number of masked 4-neighbours of a masked token."""
    g = torch.nn.functional.pad(mask.view(-1, grid, grid).float(), (1, 1, 1, 1))  # (N, g+2, g+2)
    inner = g[:, 1:-1, 1:-1]
    neighbours = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]  # (N, g, g)
    return float((neighbours * inner).sum() / inner.sum())


CASES = [  # (strategy, mask_ratio, spectral_codebook_size)
    ("structured", 0.35, K_S), ("structured", 0.15, None), ("structured", 0.45, K_S),
    ("random", 0.35, None), ("random", 0.3, K_S),
]


@pytest.mark.parametrize("strategy,ratio,k_s", CASES)
def test_masked_share_and_labels(strategy, ratio, k_s):
    ids = _ids()
    gen = torch.Generator().manual_seed(1)
    masked, labels, mask = mask_tokens(ids, ratio, strategy, GRID, VOCAB, gen, spectral_codebook_size=k_s)
    assert masked.shape == labels.shape == mask.shape == ids.shape and mask.dtype == torch.bool
    share = mask.float().mean(dim=1)  # (N,)
    assert abs(float(share.mean()) - ratio) <= 0.05
    assert bool((mask.sum(dim=1) >= 1).all())
    assert torch.equal(labels[mask], ids[mask]) and bool((labels[~mask] == IGNORE_INDEX).all())
    assert bool((masked[mask] == VOCAB).all()) and torch.equal(masked[~mask], ids[~mask])


def test_at_least_one_token_per_row():
    ids = _ids(n=8, grid=2)
    for strategy in ("structured", "random"):
        _, _, mask = mask_tokens(ids, 0.01, strategy, 2, VOCAB, torch.Generator().manual_seed(0))
        assert bool((mask.sum(dim=1) == 1).all())
    assert num_masked(4, 0.01) == 1 and num_masked(121, 0.35) == 42


def test_structured_masks_are_contiguous_on_the_grid():
    ids = _ids(n=256)
    gen = torch.Generator().manual_seed(2)
    _, _, structured = mask_tokens(ids, 0.35, "structured", GRID, VOCAB, gen)
    _, _, with_spectral = mask_tokens(ids, 0.35, "structured", GRID, VOCAB, gen, spectral_codebook_size=K_S)
    _, _, random = mask_tokens(ids, 0.35, "random", GRID, VOCAB, gen)
    r, s, w = (masked_neighbours(m, GRID) for m in (random, structured, with_spectral))
    # random masks: ~4 * 0.35 * (interior share) ~ 1.3 masked neighbours; spatial units: well above 2
    assert r < 1.5 and s > 2.4 and w > 2.0, (r, s, w)


def test_spectral_segments_mask_whole_code_groups():
    # ids whose spectral code k = id % K_s takes only 4 values, each on ~30 positions: a mask made of
    # spectral segments only must cover whole groups, except for the one group cut to fit the budget
    k = torch.randint(0, 4, (32, GRID * GRID), generator=torch.Generator().manual_seed(3))
    ids = k + K_S * torch.randint(0, 64, k.shape, generator=torch.Generator().manual_seed(4))
    _, _, mask = mask_tokens(ids, 0.45, "structured", GRID, VOCAB, torch.Generator().manual_seed(5),
                             spectral_codebook_size=K_S, spectral_share=1.0)
    for row_k, row_mask in zip(k, mask):
        partial = [c for c in range(4) if 0 < int(row_mask[row_k == c].sum()) < int((row_k == c).sum())]
        assert len(partial) <= 1


def test_seeded_generator_reproduces_masks():
    ids = _ids()
    a = mask_tokens(ids, 0.35, "structured", GRID, VOCAB, torch.Generator().manual_seed(7), spectral_codebook_size=K_S)
    b = mask_tokens(ids, 0.35, "structured", GRID, VOCAB, torch.Generator().manual_seed(7), spectral_codebook_size=K_S)
    c = mask_tokens(ids, 0.35, "structured", GRID, VOCAB, torch.Generator().manual_seed(8), spectral_codebook_size=K_S)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[2], c[2])


@pytest.mark.parametrize("bad", [dict(mask_ratio=1.5), dict(mask_ratio=0.0), dict(strategy="blocks"),
                                 dict(grid_size=10)])
def test_bad_mask_arguments(bad):
    kwargs = dict(mask_ratio=0.35, strategy="structured", grid_size=GRID, mask_token_id=VOCAB) | bad
    with pytest.raises(ValueError):
        mask_tokens(_ids(n=2), **kwargs)


@pytest.mark.parametrize("grid,block", [(11, 1), (11, 2), (11, 3), (8, 4), (16, 5), (2, 1), (1, 1)])
def test_scoring_masks_partition_in_blocks(grid, block):
    masks = scoring_masks(grid, block)  # (M, T)
    assert masks.shape[1] == grid * grid and 1 <= masks.shape[0] <= 4
    assert bool((masks.sum(dim=0) == 1).all())  # every token masked in exactly one mask
    assert torch.equal(masks, scoring_masks(grid, block))  # deterministic
    for mask in masks:  # each masked cell sits in the aligned block x block square it belongs to, all masked
        m = mask.view(grid, grid)
        for r, c in m.nonzero().tolist():
            r0, c0 = r // block * block, c // block * block
            assert bool(m[r0:r0 + block, c0:c0 + block].all())


def test_scoring_masks_hide_a_small_object_whole():
    # an object of 2x2 tokens inside one 3x3 block is masked whole in one mask: it cannot predict itself
    masks = scoring_masks(12, 3).view(-1, 12, 12)
    obj = torch.zeros(12, 12, dtype=torch.bool)
    obj[4:6, 7:9] = True
    covering = [m for m in masks if bool((m & obj).any())]
    assert len(covering) == 1 and bool(covering[0][obj].all())


def test_scoring_block_must_leave_context():
    with pytest.raises(ValueError):
        scoring_masks(8, 8)
