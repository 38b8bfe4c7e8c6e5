"""Stage 3 anomaly heads (spec 6.1). Every head scores tokens or pixels, never just whole patches (docs/design.md "Per-pixel scores").

- `compute_lm_nll_scores`: masked-LM negative log-likelihood of every token. A deterministic set of
  complementary block masks (`encoder.masking.scoring_masks`) masks each token exactly once, so a
  token is always predicted from context that excludes its own block (blind-spot scoring).
- `compute_recon_error`: per-pixel squared error of the patch decoded from its quantised codes.
- `compute_code_rarity`: -log frequency of each token's spectral code in the scene.
- `OneClassHead`: Deep SVDD on the encoder's token embeddings, with a BCE classifier for labelled data.
- `tokens_to_pixels`: token grid scores (N, T) onto the patch's pixels (N, S, S).
- `LMNLLHead`, `ReconHead`: the spec's head names as parameter-free modules over the two functions above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.masking import scoring_masks


def compute_lm_nll_scores(encoder, joint_ids: torch.LongTensor, domain_ids: torch.LongTensor,
                          mask_strategy: str = "structured", block: int | None = None,
                          spectra: torch.Tensor | None = None) -> torch.Tensor:
    """-log p(token | unmasked context) for every token: (N, T) float32.

    `mask_strategy='structured'` uses `scoring_masks(grid_size, block)`: square blocks of `block x block`
    token positions, offset so that the M masks partition the grid. One BERT pass per mask; each pass
    contributes the NLL of the tokens it masked (and 0 elsewhere), so the sum is every token's score.
    `block=None` takes the encoder's grid default (1: single-token masks). `spectra` (N, T, B): the cell
    spectra, for encoders that read them. A quick per-patch look (`HSIAnomalyDetector.forward`); scene maps
    come from the blind-spot windows of anomaly/blind_spot.py.
    """
    if mask_strategy != "structured":
        raise ValueError(f"mask_strategy {mask_strategy!r}: only 'structured' scoring masks are defined")
    n, t = joint_ids.shape  # (N, T)
    grid = encoder.grid_size
    if grid * grid != t:
        raise ValueError(f"joint_ids hold {t} tokens, but the encoder's grid is {grid}x{grid}")
    masks = scoring_masks(grid, 1 if block is None else block).to(joint_ids.device)  # (M, T) bool
    scores = torch.zeros(n, t, dtype=torch.float32, device=joint_ids.device)  # (N, T)
    for mask in masks:
        batch_mask = mask.unsqueeze(0).expand(n, t)  # (N, T)
        scores += encoder.masked_token_nll(joint_ids, domain_ids, batch_mask, spectra).float()
    return scores


def compute_recon_error(tokenizer, patches: torch.Tensor, joint_ids: torch.LongTensor) -> torch.Tensor:
    """Per-pixel reconstruction error (N, S, S): mean over bands of (patch - decode(joint_ids))^2.

    The decode runs from the quantised codes (docs/design.md "Lessons from the prototype": a continuous latent reconstructs anomalies too
    well); for the tokens of `patches` this equals `tokenizer.pixel_recon_error(patches)`.
    """
    recon = tokenizer.decode_joint_ids(joint_ids)  # (N, B, S, S)
    return (patches.float() - recon.float()).pow(2).mean(dim=1)  # (N, S, S)


def compute_code_rarity(code_ids: torch.LongTensor, log_freq: torch.Tensor) -> torch.Tensor:
    """-log frequency of each token's code in the scene: (N, T) from codes (N, T) and log_freq (K,)."""
    return -log_freq[code_ids]  # (N, T)


def code_log_frequencies(counts: torch.Tensor) -> torch.Tensor:
    """log relative frequency of each code (K,) from its count (K,); unseen codes get log(0.5 / total)."""
    counts = counts.double()
    total = counts.sum().clamp_min(1.0)
    return (counts.clamp_min(0.5) / total).log().float()  # (K,)


def tokens_to_pixels(token_scores: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, T) scores on a g x g token grid -> (N, S, S): each token's score on the pixels of its cell."""
    n, t = token_scores.shape
    grid = int(round(t ** 0.5))
    if grid * grid != t:
        raise ValueError(f"{t} tokens do not form a square grid")
    grid_scores = token_scores.reshape(n, 1, grid, grid)  # (N, 1, g, g)
    if grid == patch_size:
        return grid_scores[:, 0]  # (N, S, S)
    return F.interpolate(grid_scores.float(), size=(patch_size, patch_size), mode="nearest")[:, 0]  # (N, S, S)


class OneClassHead(nn.Module):
    """Deep SVDD (Ruff et al., ICML 2018) on the encoder's embeddings, per token or per patch.

    `objective='svdd'` (unlabelled data): `net` maps an embedding to `rep_dim` features with NO bias
    terms, and the centre `c` is fixed from the mean mapped embedding of the training data before
    training (`init_center`) and pushed away from 0 (|c_i| >= center_eps): with biases, or with c = 0,
    the network could map everything onto c (the trivial "hypersphere collapse"). Score = ||net(h - mu) - c||^2.
    The embeddings are centred first (`mu`, their training mean, fixed with c): BERT's final LayerNorm gives every
    token a shared offset, which would act as the bias the map must not have. The map runs in fp32, also inside
    an autocast region.

    `objective='bce'` (labelled data, spec 6.1.3): a linear classifier on the same features gives
    anomaly logits, trained with BCE; the score is the logit.

    `per_token=True` scores each token's embedding, (N, T); `per_token=False` is the spec's patch-mean
    variant: one score per patch from `hidden.mean(dim=1)`, (N, 1). A 2-D input z (N, H) is scored as
    the spec's patch-level embedding: (N, 1).
    """

    def __init__(self, hidden_size: int, rep_dim: int = 32, per_token: bool = True, center_eps: float = 0.1,
                 objective: str = "svdd"):
        super().__init__()
        if objective not in ("svdd", "bce"):
            raise ValueError(f"objective {objective!r}: 'svdd' or 'bce'")
        self.per_token = per_token
        self.center_eps = center_eps
        self.objective = objective
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size, bias=False),
            nn.ReLU(),
            nn.Linear(hidden_size, rep_dim, bias=False),
        )
        self.classifier = nn.Linear(rep_dim, 1) if objective == "bce" else None
        self.register_buffer("c", torch.zeros(rep_dim))
        self.register_buffer("mu", torch.zeros(hidden_size))  # training mean of the embeddings (0 for BCE)
        self.register_buffer("center_ready", torch.tensor(objective == "bce"))

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, T, H) -> (N, T, R) per token, or (N, 1, R) from the patch mean; a patch-level z (N, H)
        (spec 6.1.3: `z = seq_embeds.mean(dim=1)`) is one token: (N, 1, R)."""
        if hidden.ndim == 2:
            hidden = hidden.unsqueeze(1)  # (N, 1, H)
        if not self.per_token:
            hidden = hidden.mean(dim=1, keepdim=True)  # (N, 1, H)
        with torch.autocast(hidden.device.type, enabled=False):
            return self.net(hidden.float() - self.mu)  # (N, T|1, R)

    @torch.no_grad()
    def init_center(self, hidden_batches) -> None:
        """Fix mu as the mean embedding, then c as the mean of `features(hidden)`, over a sequence of hidden
        batches (N, T, H)."""
        hidden_batches = list(hidden_batches)
        flat = torch.cat([h.reshape(-1, h.shape[-1]).float() for h in hidden_batches]) if hidden_batches else None
        if flat is None or len(flat) == 0:  # (N*T, H) over all batches
            raise ValueError("init_center needs at least one batch of embeddings")
        self.mu.copy_(flat.mean(dim=0))
        z = torch.cat([self.features(h).reshape(-1, self.c.numel()) for h in hidden_batches])  # (M, R)
        c = z.mean(dim=0)  # (R,)
        sign = torch.where(c < 0, -1.0, 1.0)
        c = torch.where(c.abs() < self.center_eps, sign * self.center_eps, c)
        self.c.copy_(c)
        self.center_ready.fill_(True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Anomaly score: (N, T) per token or (N, 1) per patch; higher = more anomalous."""
        z = self.features(hidden)  # (N, T|1, R)
        if self.objective == "bce":
            return self.classifier(z)[..., 0]  # (N, T|1) logits
        if not bool(self.center_ready):
            raise RuntimeError("OneClassHead: call init_center(...) before scoring (the centre c is not set)")
        return (z - self.c).pow(2).sum(dim=-1)  # (N, T|1)

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """SVDD: mean squared distance to c (no labels). BCE: logits against 0/1 labels shaped like the score."""
        score = self.forward(hidden)
        if self.objective == "svdd":
            if labels is not None:
                raise ValueError("the SVDD objective is unsupervised: pass no labels")
            return score.mean()
        if labels is None:
            raise ValueError("the BCE objective needs 0/1 labels")
        return F.binary_cross_entropy_with_logits(score, labels.to(score.dtype))


class LMNLLHead(nn.Module):
    """Spec 6.1.1 as a module: a parameter-free wrapper over `compute_lm_nll_scores`.

    The encoder is an argument, not a submodule, so the head adds nothing to a state_dict and the
    detector's frozen encoder is not registered twice.

        head = LMNLLHead(block=2)
        nll = head(encoder, joint_ids, domain_ids)   # joint_ids (N, T), domain_ids (N,) -> (N, T) float32
    """

    def __init__(self, mask_strategy: str = "structured", block: int | None = None):
        super().__init__()
        self.mask_strategy = mask_strategy
        self.block = block

    def forward(self, encoder, joint_ids: torch.LongTensor, domain_ids: torch.LongTensor) -> torch.Tensor:
        """-log p(token | unmasked context) of every token: (N, T) float32."""
        return compute_lm_nll_scores(encoder, joint_ids, domain_ids, self.mask_strategy, self.block)


class ReconHead(nn.Module):
    """Spec 6.1.2 as a module: a parameter-free wrapper over `compute_recon_error` (tokenizer passed in).

        err = ReconHead()(tokenizer, patches, joint_ids)   # (N, B, S, S), (N, T) -> (N, S, S) per pixel
    """

    def forward(self, tokenizer, patches: torch.Tensor, joint_ids: torch.LongTensor) -> torch.Tensor:
        """Per-pixel reconstruction error from the decode of `joint_ids`: (N, S, S)."""
        return compute_recon_error(tokenizer, patches, joint_ids)
