"""HSIEncoderBERT and UniversalHSIModel (spec 5.1, 5.2; docs/design.md "Pre-training cost and embeddings").

`HSIEncoderBERT` wraps `transformers.BertForMaskedLM` (`self.encoder`):

- Inputs enter through `inputs_embeds = token + domain + position` (spec 5.1). BERT's own position and
  token-type tables are zeroed and frozen, so positions are counted once, by `position_embedding`.
- The token table (joint_vocab_size + 1 rows, the last id = mask token) IS BERT's word-embedding table,
  tied to the MLM decoder as in BERT; no unused (V x H) table exists. The decoder's extra output for the
  mask id is sliced off: logits cover the joint vocabulary V.
- The MLM head (`self.encoder.cls`) only runs on the selected (masked) positions: (N, T, V) logits are
  never built (with V = 65,536 they would dominate memory and time).
- `load_pretrained_lm=True` reuses a pretrained transformer body (encoder/pretrained_lm.py); token,
  domain and position embeddings and the MLM head are new, listed in `reinitialised_keys`.

Blind spot with continuous context (`spectral_input_dim` B > 0, `guard_radius` r):
- every visible position also gets its prepared cell spectrum, projected (`spectrum_in`, B -> H) and added
  to `inputs_embeds`; masked positions get none;
- the joint ids of the guard ring (within r of a masked position, r = the spatial CNN's receptive radius in
  tokens) are replaced by the mask id too, since their spatial codes were computed from masked pixels;
  their spectra stay visible (a cell's spectrum is its own pixels only);
- `spectrum_out` (H -> B) predicts each masked position's spectrum from its context, as a correction to the local mean
  of the visible spectra (`context_mean`; the correction starts at zero); pre-training adds the
  normalised squared error (error / variance of the targets) to the cross-entropy, `spectrum_weight` times;
- a `blind_spot_share` of the training rows is masked with one square block (side 1..`max_block`), the
  family the scoring masks belong to; the rest with the `mask_strategy` masks.

Reading a checkpoint: encoder/checkpoint.py (`load_encoder`); tokenising a scene's windows:
sspq_tokenizer/scene_tokens.py (`tokenize_windows`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from encoder.masking import STRATEGIES, block_mask, guard_ring, mask_tokens, sample_mask
from encoder.pretrained_lm import NOT_LOADED, default_arch, load_pretrained_body
from encoder.query_layer import layer_at, readout_slots
from sspq_tokenizer.joint_tokenizer import frozen_tokenize
from utils.errors import CheckpointError


class HSIEncoderBERT(nn.Module):
    def __init__(self, joint_vocab_size: int, num_domains: int, bert_model_name_or_path: str,
                 load_pretrained_lm: bool, mask_ratio: float, max_seq_len: int, grid_size: int | None = None,
                 bert_config: dict[str, Any] | None = None, mask_strategy: str = "structured",
                 spectral_codebook_size: int | None = None, spectral_mask_share: float = 0.25, *,
                 spectral_input_dim: int = 0, guard_radius: int = 0, blind_spot_share: float = 0.0,
                 max_block: int = 4, spectrum_weight: float = 1.0):
        """`grid_size` g (tokens form a g x g grid, needed by structured masks); `bert_config` overrides
        BertConfig fields (ARCH_KEYS in encoder/pretrained_lm.py; only dropouts when loading a pretrained
        body); `spectral_codebook_size` K_s enables spectral-segment masking (code k = id % K_s) for a
        `spectral_mask_share` of each mask. The keyword-only arguments set up the blind spot with
        continuous context (module docstring); their defaults give the plain token-only encoder."""
        super().__init__()
        if mask_strategy not in STRATEGIES:
            raise ValueError(f"mask_strategy {mask_strategy!r}: use one of {STRATEGIES}")
        if grid_size is not None and grid_size * grid_size > max_seq_len:
            raise ValueError(f"a {grid_size}x{grid_size} token grid does not fit max_seq_len={max_seq_len}")
        self.joint_vocab_size = joint_vocab_size
        self.mask_token_id = joint_vocab_size  # last row of the token table
        self.num_domains = num_domains
        self.bert_model_name_or_path = bert_model_name_or_path
        self.mask_ratio = mask_ratio
        self.max_seq_len = max_seq_len
        self.grid_size = grid_size
        self.mask_strategy = mask_strategy
        self.spectral_codebook_size = spectral_codebook_size
        self.spectral_mask_share = spectral_mask_share
        if (guard_radius > 0 or blind_spot_share > 0) and grid_size is None:
            raise ValueError("guard_radius and blind_spot_share need the token grid (grid_size)")
        if not 0.0 <= blind_spot_share <= 1.0:
            raise ValueError(f"blind_spot_share {blind_spot_share}: must lie in [0, 1]")
        self.spectral_input_dim = int(spectral_input_dim)
        self.guard_radius = int(guard_radius)
        self.blind_spot_share = float(blind_spot_share)
        self.max_block = int(max_block)
        self.spectrum_weight = float(spectrum_weight)

        if load_pretrained_lm:
            self.arch, body_state = load_pretrained_body(bert_model_name_or_path, bert_config)
        else:
            self.arch, body_state = default_arch(bert_config), None
        config = BertConfig(vocab_size=joint_vocab_size + 1, max_position_embeddings=max_seq_len,
                            type_vocab_size=1, pad_token_id=None, tie_word_embeddings=True, **self.arch)
        self.encoder = BertForMaskedLM(config)
        self.hidden_size = config.hidden_size
        self.domain_embedding = nn.Embedding(num_domains, self.hidden_size)
        self.position_embedding = nn.Embedding(max_seq_len, self.hidden_size)
        for table in (self.domain_embedding, self.position_embedding):
            nn.init.normal_(table.weight, std=config.initializer_range)
        self.spectrum_in = self.spectrum_out = None
        if self.spectral_input_dim > 0:
            self.spectrum_in = nn.Linear(self.spectral_input_dim, self.hidden_size, bias=False)  # 0 = nothing seen
            self.spectrum_out = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.GELU(),
                                              nn.Linear(self.hidden_size, self.spectral_input_dim))
            nn.init.zeros_(self.spectrum_out[-1].weight)  # starts as the local mean of the visible spectra
            nn.init.zeros_(self.spectrum_out[-1].bias)
        embeddings = self.encoder.bert.embeddings
        for table in (embeddings.position_embeddings, embeddings.token_type_embeddings):
            nn.init.zeros_(table.weight)
            table.weight.requires_grad_(False)

        self.reinitialised_keys: tuple[str, ...] = ()
        if body_state is not None:
            missing, unexpected = self.encoder.bert.load_state_dict(body_state, strict=False)
            if set(missing) != set(NOT_LOADED) or unexpected:
                raise CheckpointError(
                    f"{bert_model_name_or_path}: the pretrained BERT body does not fit: missing "
                    f"{sorted(set(missing) - set(NOT_LOADED))}, unexpected {sorted(unexpected)}")
            loaded = {f"encoder.bert.{key}" for key in body_state}
            self.reinitialised_keys = tuple(sorted(set(self.state_dict()) - loaded))

    @property
    def token_embedding(self) -> nn.Embedding:
        """(joint_vocab_size + 1, H) token table; BERT's word embeddings, tied to the MLM decoder."""
        return self.encoder.bert.embeddings.word_embeddings

    @property
    def dropout(self) -> nn.Dropout:
        """Spec 5.1's `self.dropout`: BERT's embedding dropout, which `BertEmbeddings` applies (after its
        LayerNorm) to `inputs_embeds`; the same module, so the inputs are dropped out once."""
        return self.encoder.bert.embeddings.dropout

    def encoder_args(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild this architecture offline (what checkpoints store)."""
        return {"joint_vocab_size": self.joint_vocab_size, "num_domains": self.num_domains,
                "bert_model_name_or_path": self.bert_model_name_or_path, "load_pretrained_lm": False,
                "mask_ratio": self.mask_ratio, "max_seq_len": self.max_seq_len, "grid_size": self.grid_size,
                "bert_config": dict(self.arch), "mask_strategy": self.mask_strategy,
                "spectral_codebook_size": self.spectral_codebook_size,
                "spectral_mask_share": self.spectral_mask_share, "spectral_input_dim": self.spectral_input_dim,
                "guard_radius": self.guard_radius, "blind_spot_share": self.blind_spot_share,
                "max_block": self.max_block, "spectrum_weight": self.spectrum_weight}

    def token_grid(self, num_tokens: int) -> int | None:
        """Side g of the token grid of a T-token sequence: `grid_size`, else sqrt(T) when T is a square
        (tokens are row-major over a g x g grid, docs/design.md "Token grid"), else None (structured masks then refuse)."""
        if self.grid_size is not None:
            return self.grid_size
        side = math.isqrt(num_tokens)
        return side if side * side == num_tokens else None

    def sample_mask(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, T) bool training mask: a `blind_spot_share` of the rows one block (the scoring family),
        the others with this encoder's ratio and strategy."""
        mask = sample_mask(tokens, self.mask_ratio, self.mask_strategy, self.token_grid(tokens.shape[1]), generator,
                           self.spectral_codebook_size, self.spectral_mask_share)  # (N, T)
        if self.blind_spot_share > 0:
            device = generator.device if generator is not None else tokens.device
            rows = torch.rand(len(tokens), generator=generator, device=device) < self.blind_spot_share  # (N,)
            blocks = block_mask(len(tokens), self.grid_size, self.max_block, generator, device)  # (N, T)
            mask = torch.where(rows[:, None].to(mask.device), blocks.to(mask.device), mask)
        return mask

    def mask_tokens(self, joint_ids: torch.Tensor, mask_ratio: float, strategy: str = "structured", *,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Spec 5.1: joint ids (N, T) -> `(masked_input_ids (N, T), labels (N, T))`; masked positions hold
        `mask_token_id` / their original id, the others their id / -100. `strategy`: 'structured' (spatial
        runs grown to their grid neighbours, plus spectral segments when `spectral_codebook_size` is set)
        or 'random'; see encoder/masking.py (`mask_tokens` there also returns the bool mask)."""
        masked_input_ids, labels, _ = mask_tokens(joint_ids, mask_ratio, strategy, self.token_grid(joint_ids.shape[1]),
                                                  self.mask_token_id, generator, self.spectral_codebook_size,
                                                  self.spectral_mask_share)
        return masked_input_ids, labels

    def blind_inputs(self, tokens: torch.Tensor, mask: torch.Tensor, spectra: torch.Tensor | None = None,
                     context_ids: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the encoder may see when `mask` (N, T) is hidden: (input ids (N, T) with the mask id on the
        mask and its guard ring, or everywhere when `context_ids` is False, spectra (N, T, B) zeroed on the mask,
        or None)."""
        if not context_ids:
            input_ids = torch.full_like(tokens, self.mask_token_id)  # (N, T): the spectra are the whole context
        else:
            hidden_ids = mask | guard_ring(mask, self.grid_size, self.guard_radius) if self.guard_radius else mask
            input_ids = tokens.masked_fill(hidden_ids, self.mask_token_id)  # (N, T)
        if spectra is None:
            return input_ids, None
        return input_ids, spectra.masked_fill(mask.unsqueeze(-1), 0.0)  # (N, T, B)

    def embed(self, input_ids: torch.Tensor, domain_ids: torch.Tensor, spectra: torch.Tensor | None = None,
              ) -> torch.Tensor:
        """token + domain + position (+ projected spectrum) embeddings: (N, T) ids, (N,) domains,
        spectra (N, T, B) zero where hidden -> (N, T, H). For an encoder that reads spectra, `spectra=None`
        means that no position shows its spectrum (ids-only context, as for the one-class head)."""
        t = input_ids.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"{t} tokens per sequence exceed max_seq_len={self.max_seq_len}")
        positions = torch.arange(t, device=input_ids.device)  # (T,)
        tok = self.token_embedding(input_ids)  # (N, T, H)
        dom = self.domain_embedding(domain_ids).unsqueeze(1)  # (N, 1, H)
        pos = self.position_embedding(positions).unsqueeze(0)  # (1, T, H)
        if self.spectrum_in is None or spectra is None:
            return tok + dom + pos  # (N, T, H)
        return tok + dom + pos + self.spectrum_in(spectra.to(tok.dtype))  # (N, T, H)

    def body(self, input_ids: torch.Tensor, domain_ids: torch.Tensor, spectra: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Last hidden states of the BERT body: (N, T, H)."""
        return self.encoder.bert(inputs_embeds=self.embed(input_ids, domain_ids, spectra)).last_hidden_state

    def masked_hidden(self, input_ids: torch.Tensor, domain_ids: torch.Tensor, spectra: torch.Tensor | None,
                      mask: torch.Tensor) -> torch.Tensor:
        """`body(...)[mask]` (M, H) in nonzero() order, with the last layer evaluated at the masked positions
        only (encoder/query_layer.py): the readout the blind-spot heads need, without the other rows' last layer."""
        bert = self.encoder.bert
        hidden = bert.embeddings(inputs_embeds=self.embed(input_ids, domain_ids, spectra))  # (N, T, H)
        *first, last = bert.encoder.layer
        for layer in first:
            out = layer(hidden)
            hidden = out[0] if isinstance(out, tuple) else out  # (N, T, H); transformers < 5 returns a tuple
        return layer_at(last, hidden, mask)  # (M, H)

    def predict(self, selected: torch.Tensor) -> torch.Tensor:
        """MLM logits of hidden states at the masked positions: (M, H) -> (M, V)."""
        return self.encoder.cls(selected)[:, : self.joint_vocab_size]  # (M, V); drop the mask id's output

    def context_mean(self, visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(M, B) at the masked positions of `mask` (N, T), nonzero() order: the mean visible spectrum of
        `visible` (N, T, B) within `max_block // 2 + 1` grid steps (a local background estimate; the sequence's
        visible mean where none is that close)."""
        g, radius = self.grid_size, self.max_block // 2 + 1
        cells = torch.arange(g * g, device=mask.device)
        steps = torch.maximum((cells[:, None] // g - cells[None, :] // g).abs(),
                              (cells[:, None] % g - cells[None, :] % g).abs())  # (T, T) grid distance
        near = (steps <= radius).to(visible.dtype)  # (T, T)
        seen = (~mask).to(visible.dtype)  # (N, T)
        slots, valid = readout_slots(mask)  # (N, Q) each
        with torch.autocast(visible.device.type, enabled=False):
            weights = near[slots] * seen[:, None, :]  # (N, Q, T)
            sums = torch.bmm(weights, visible)[valid]  # (M, B)
            counts = weights.sum(dim=-1)[valid]  # (M,)
            overall = (visible.sum(dim=1) / seen.sum(dim=1, keepdim=True).clamp_min(1))  # (N, B)
        rows = mask.nonzero(as_tuple=True)[0]  # (M,)
        return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1e-12)[:, None], overall[rows])  # (M, B)

    def predict_spectrum(self, selected: torch.Tensor, mask: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Context-predicted spectra at the masked positions, (M, B) float32 in nonzero() order: the local
        mean of the visible spectra (`context_mean`, from `visible` (N, T, B)) plus a correction learned from
        their hidden states `selected` (M, H)."""
        return self.context_mean(visible.float(), mask) + self.spectrum_out(selected).float()  # (M, B)

    def forward(self, tokens: torch.Tensor, domain_ids: torch.Tensor, pretrain: bool = True,
                mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                spectra: torch.Tensor | None = None):
        """pretrain: `(loss, logits (M, V), hidden (N, T, H))`, cross-entropy over the M masked positions
        (mask sampled with `generator` unless given), plus the spectrum term when the encoder reads spectra
        (N, T, B); else `hidden (N, T, H)` of the unmasked tokens (and spectra)."""
        if not pretrain:
            return self.body(tokens, domain_ids, spectra)
        if mask is None:
            mask = self.sample_mask(tokens, generator)  # (N, T)
        if not bool(mask.any()):
            raise ValueError("the mask selects no position: nothing to predict")
        input_ids, visible = self.blind_inputs(tokens, mask, spectra)
        hidden = self.body(input_ids, domain_ids, visible)  # (N, T, H)
        selected = hidden[mask]  # (M, H)
        logits = self.predict(selected)  # (M, V)
        loss = F.cross_entropy(logits.float(), tokens[mask])
        if self.spectrum_out is not None and spectra is not None:
            loss = loss + self.spectrum_weight * self.spectrum_loss(selected, mask, spectra, visible)
        return loss, logits, hidden

    def spectrum_loss(self, selected: torch.Tensor, mask: torch.Tensor, spectra: torch.Tensor,
                      visible: torch.Tensor) -> torch.Tensor:
        """Squared error of the spectra predicted from the hidden states `selected` (M, H) at the masked
        positions over the targets' variance: the constant best guess scores 1, whatever the scene's scale."""
        target = spectra[mask].float()  # (M, B)
        error = (self.predict_spectrum(selected, mask, visible) - target).pow(2).mean()
        return error / target.var(dim=0, unbiased=False).mean().clamp_min(1e-8)

    def masked_scores(self, tokens: torch.Tensor, domain_ids: torch.Tensor, mask: torch.Tensor,
                      spectra: torch.Tensor | None = None, *, token_heads: bool = True,
                      context_ids: bool = True) -> dict[str, torch.Tensor]:
        """Blind-spot scores of the masked positions, each (N, T) float32 (0 where not masked):
        "lm_nll" -log p(joint id | context); "lm_spectral" -log sum_m p(k + K_s m | context), the spectral
        code's marginal (needs spectral_codebook_size); "ctx_spec" the mean squared error of the
        context-predicted spectrum, and "residual" (M, B) at the masked positions in nonzero() order, the pixel's
        spectrum minus that prediction (encoders that read spectra). `token_heads=False` skips the MLM head (the
        two token scores); `context_ids=False` shows no joint id (`blind_inputs`), `tokens` then serve as targets only."""
        input_ids, visible = self.blind_inputs(tokens, mask, spectra, context_ids)
        selected = self.masked_hidden(input_ids, domain_ids, visible, mask)  # (M, H)
        target = tokens[mask]  # (M,)
        per_position, out = {}, {}
        if token_heads:
            log_p = F.log_softmax(self.predict(selected).float(), dim=-1)  # (M, V)
            per_position["lm_nll"] = -log_p.gather(1, target[:, None])[:, 0]  # (M,)
        if token_heads and self.spectral_codebook_size:
            k_s = self.spectral_codebook_size
            marginal = log_p.reshape(len(target), -1, k_s).logsumexp(dim=1)  # (M, K_s): V = K_x * K_s, id = k + K_s m
            per_position["lm_spectral"] = -marginal.gather(1, (target % k_s)[:, None])[:, 0]
        if self.spectrum_out is not None and spectra is not None:
            residual = spectra[mask].float() - self.predict_spectrum(selected, mask, visible)  # (M, B)
            per_position["ctx_spec"] = residual.pow(2).mean(-1)
            out["residual"] = residual
        for name, values in per_position.items():
            full = values.new_zeros(tokens.shape)  # (N, T)
            full[mask] = values
            out[name] = full
        return out

    def masked_token_nll(self, tokens: torch.Tensor, domain_ids: torch.Tensor, mask: torch.Tensor,
                         spectra: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(true id | context outside the mask and its guard ring) at masked positions, 0 elsewhere:
        (N, T) float32."""
        return self.masked_scores(tokens, domain_ids, mask, spectra)["lm_nll"]


class UniversalHSIModel(nn.Module):
    """Frozen SSPQ tokenizer + HSIEncoderBERT (spec 5.2)."""

    def __init__(self, tokenizer: nn.Module, encoder: HSIEncoderBERT):
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = encoder

    def tokenize(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, B, S, S) -> joint ids (N, T); see `frozen_tokenize`."""
        return frozen_tokenize(self.tokenizer, patches)

    def encode_patches(self, patches: torch.Tensor, domain_ids: torch.Tensor, pretrain: bool = False,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """pretrain: {"loss", "logits" (M, V), "hidden" (N, T, H), "joint_ids" (N, T)};
        else {"hidden" (N, T, H), "joint_ids" (N, T)}."""
        joint_ids = self.tokenize(patches)  # (N, T)
        if pretrain:
            loss, logits, hidden = self.encoder(joint_ids, domain_ids, pretrain=True, generator=generator)
            return {"loss": loss, "logits": logits, "hidden": hidden, "joint_ids": joint_ids}
        hidden = self.encoder(joint_ids, domain_ids, pretrain=False)
        return {"hidden": hidden, "joint_ids": joint_ids}
