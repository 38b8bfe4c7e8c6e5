"""HSIAnomalyDetector (spec 6.2): a frozen (or LoRA-adapted) universal model plus anomaly heads.

    det = HSIAnomalyDetector(universal_model, hidden_size, head_weights={"recon": 1, "rarity": 1, "grx": 1})
    out = det(patches, domain_ids, mode="eval")        # per-head (N, S, S) pixel maps + "combined"
    scene = det.score_scene(cube, domain_id=0)         # whole-scene (H, W) maps, normalised per scene
    anomaly_map = det.generate_anomaly_map(cube, 0)    # (H, W) float32 = scene.anomaly_map

Heads (DESIGN 2, 10; a head with weight 0 is not computed):
- lm_nll, lm_spectral, ctx_spec   context heads: each pixel scored while hidden in a blind spot
             (anomaly/blind_spot.py): joint-id NLL, spectral-code marginal NLL, predicted-spectrum error
- recon      per-pixel squared error of the decode from the quantised codes
- one_class  Deep SVDD distance of each token's embedding (or BCE logit after supervised training)
- rarity     -log frequency of the pixel's spectral code in the scored scene
- grx, lrx   global / dual-window local RX on the prepared cube (label-free, whole-scene heads)

Fusion: every head's whole-scene (H, W) map is normalised over the scene (robust z-score
(x - median) / (1.4826 MAD) by default, min-max or rank), then averaged with `head_weights`. This file holds
the module; streaming a scene through it is anomaly/scoring.py, rebuilding it from checkpoints
anomaly/loading.py.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from anomaly.config import HEAD_NAMES, AnomalyConfig, LocalRXSettings
from anomaly.fusion import fuse_scores
from anomaly.heads import (OneClassHead, code_log_frequencies, compute_code_rarity, compute_lm_nll_scores,
                           compute_recon_error, tokens_to_pixels)
from anomaly.scoring import SceneScores, score_scene
from utils.errors import ConfigError

DEFAULT_HEAD_WEIGHTS = {"lm_nll": 0.4, "recon": 0.3, "one_class": 0.3}  # spec 6.2
ADAPTER_KEY = "lora_"
DOMAIN_TABLE_KEY = "universal_model.encoder.domain_embedding.weight"


class HSIAnomalyDetector(nn.Module):
    """Frozen universal model (tokenizer + BERT encoder) with anomaly heads on top.

    freeze_encoder must be True: the tokenizer and the encoder's own weights never train. With
    use_lora, peft LoRA adapters (`lora`: r, alpha, dropout, target_modules) are injected into the BERT
    attention projections and train together with the heads. The constructor asserts that exactly the
    head (and adapter) parameters are trainable. `stride` is the patch stride of the scene scan
    (the tokenizer config's; default patch_size // 2).
    """

    def __init__(self, universal_model: nn.Module, hidden_size: int, freeze_encoder: bool = True,
                 use_lora: bool = False, head_weights: dict[str, float] | None = None, *,
                 lora: dict[str, Any] | None = None, one_class: dict[str, Any] | None = None,
                 objective: str = "svdd", lm_block: int = 2, normalize: str = AnomalyConfig.normalize_scores,
                 smoothing: float = AnomalyConfig.fused_smoothing,
                 local_rx: dict[str, int] | None = None, stride: int | None = None, score_offsets: int = 2,
                 adapted_domain: bool = False, rx_components: int = AnomalyConfig.rx_components):
        super().__init__()
        if not freeze_encoder:
            raise ConfigError("freeze_encoder: false (full fine-tuning) is not supported; use use_lora: true")
        weights = dict(DEFAULT_HEAD_WEIGHTS if head_weights is None else head_weights)
        unknown = sorted(set(weights) - set(HEAD_NAMES))
        if unknown:
            raise ConfigError(f"head_weights: unknown head(s) {unknown}; the heads are {', '.join(HEAD_NAMES)}")
        self.head_weights = {name: float(w) for name, w in weights.items() if w > 0}
        if not self.head_weights:
            raise ConfigError("head_weights: at least one head needs a weight > 0")
        self.universal_model = universal_model
        self.use_lora = use_lora
        self.lm_block = lm_block
        self.score_offsets = score_offsets
        self.adapted_domain = adapted_domain  # the domain table was fitted to the scene (anomaly/adapt.py)
        self.normalize = normalize
        self.smoothing = smoothing  # Gaussian sigma (pixels) on the fused scene map (anomaly/fusion.py)
        self.local_rx_args = {**asdict(LocalRXSettings()), **(local_rx or {})}  # inner, outer, n_components
        self.rx_components = rx_components  # principal components of grx and ctx_rx (0 = every band)
        tokenizer = universal_model.tokenizer
        self.patch_size = tokenizer.patch_size
        self.num_bands = tokenizer.num_bands
        self.stride = stride or max(1, self.patch_size // 2)
        universal_model.requires_grad_(False)
        if use_lora:
            self._inject_lora(dict(lora or {}))
        self.one_class_head = None
        if "one_class" in self.head_weights:
            self.one_class_head = OneClassHead(hidden_size, objective=objective, **dict(one_class or {}))
        self.register_buffer("code_log_freq", code_log_frequencies(torch.zeros(tokenizer.K_s)))
        expected = self.head_parameter_count() + self.adapter_parameter_count()
        assert self.trainable_parameter_count() == expected, (
            f"trainable parameters {self.trainable_parameter_count()} != heads + adapters {expected}")
        self.train(False)

    # ------------------------------------------------------------------ parameters
    def _inject_lora(self, settings: dict[str, Any]) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=int(settings.get("r", 8)), lora_alpha=settings.get("alpha", 16),
                            lora_dropout=float(settings.get("dropout", 0.0)),
                            target_modules=list(settings.get("target_modules", ["query", "value"])))
        try:
            inject_adapter_in_model(config, self.universal_model.encoder)
        except ValueError as err:
            raise ConfigError(f"lora.target_modules {config.target_modules}: {str(err).splitlines()[0]} "
                              f"(BERT attention modules are named query, key, value)") from None

    def head_parameter_count(self) -> int:
        return 0 if self.one_class_head is None else sum(p.numel() for p in self.one_class_head.parameters())

    def adapter_parameter_count(self) -> int:
        return sum(p.numel() for n, p in self.universal_model.named_parameters() if ADAPTER_KEY in n)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What Stage 3 adds to its parents: head weights and buffers, LoRA adapters, code frequencies, and the
        domain table when it was adapted to the scene."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items()
                if k.startswith("one_class_head.") or ADAPTER_KEY in k or k == "code_log_freq"
                or (self.adapted_domain and k == DOMAIN_TABLE_KEY)}

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `trained_state_dict`; the key sets must match exactly."""
        own = self.trained_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"detector state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> "HSIAnomalyDetector":
        """Heads follow `mode`; the tokenizer always stays in eval (its VQ codebooks move in train mode),
        and so does the encoder unless LoRA adapters train (dropout only where something learns)."""
        super().train(mode)
        self.universal_model.tokenizer.eval()
        if not self.use_lora:
            self.universal_model.encoder.eval()
        return self

    # ------------------------------------------------------------------ per-patch scoring
    @property
    def active_heads(self) -> list[str]:
        return [name for name in HEAD_NAMES if name in self.head_weights]

    def tokenize(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (N, B, S, S) -> joint ids (N, T); the tokenizer is frozen and in eval mode."""
        return self.universal_model.tokenize(patches)

    def spectral_codes(self, joint_ids: torch.Tensor) -> torch.Tensor:
        return joint_ids % self.universal_model.tokenizer.K_s  # (N, T)

    def one_class_pixels(self, hidden: torch.Tensor) -> torch.Tensor:
        """One-class scores of hidden (N, T, H) on the patch pixels (N, S, S)."""
        score = self.one_class_head(hidden)  # (N, T) or (N, 1)
        if self.one_class_head.per_token:
            return tokens_to_pixels(score, self.patch_size)  # (N, S, S)
        return score[:, :, None].expand(-1, self.patch_size, self.patch_size)  # (N, S, S)

    def head_scores(self, patches: torch.Tensor, domain_ids: torch.Tensor,
                    code_log_freq: torch.Tensor | None = None, heads: list[str] | None = None
                    ) -> dict[str, torch.Tensor]:
        """Raw per-pixel scores (N, S, S) of each active patch head (higher = more anomalous), or of the
        active ones among `heads`; lm_nll here is the patch's own checkerboard of blind spots (a quick look).

        `code_log_freq` (K_s,) is the scored scene's code frequency table for the rarity head; without it
        the table of the training scene (buffer `code_log_freq`) is used.
        """
        encoder, tokenizer = self.universal_model.encoder, self.universal_model.tokenizer
        joint_ids = self.tokenize(patches)  # (N, T)
        wanted = set(self.head_weights if heads is None else heads) & set(self.head_weights)
        out: dict[str, torch.Tensor] = {}
        if "lm_nll" in wanted:
            spectra = tokenizer.spectral_vqvae.cells(patches) if encoder.spectral_input_dim else None  # (N, T, B)
            nll = compute_lm_nll_scores(encoder, joint_ids, domain_ids, block=self.lm_block, spectra=spectra)
            out["lm_nll"] = tokens_to_pixels(nll, self.patch_size)  # (N, S, S)
        if "recon" in wanted:
            with torch.no_grad():
                out["recon"] = compute_recon_error(tokenizer, patches, joint_ids)  # (N, S, S)
        if "one_class" in wanted:
            hidden = encoder(joint_ids, domain_ids, pretrain=False)  # (N, T, H)
            out["one_class"] = self.one_class_pixels(hidden)
        if "rarity" in wanted:
            table = self.code_log_freq if code_log_freq is None else code_log_freq.to(joint_ids.device)
            rarity = compute_code_rarity(self.spectral_codes(joint_ids), table)  # (N, T)
            out["rarity"] = tokens_to_pixels(rarity, self.patch_size)
        return out

    def forward(self, patches: torch.Tensor, domain_ids: torch.Tensor, mode: str = "eval",
                code_log_freq: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Spec 6.2 forward: {head: (N, S, S) raw pixel scores for each active patch head, "combined": (N, S, S)}.

        "combined" normalises each head over THIS batch's pixels and fuses them with the patch heads'
        weights: a quick look only. The scene-level heads (grx, lrx) and the per-scene normalisation the
        anomaly map uses live in `score_scene`. mode "eval" runs without gradients, "train" keeps them.
        """
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        with torch.set_grad_enabled(mode == "train"):
            out = self.head_scores(patches, domain_ids, code_log_freq)
            weights = {name: w for name, w in self.head_weights.items() if name in out}
            if weights:
                out["combined"] = fuse_scores({name: out[name] for name in weights}, weights, self.normalize)
        return out

    # ------------------------------------------------------------------ training objective
    def target_labels(self, gt_patches: torch.Tensor) -> torch.Tensor:
        """0/1 gt patches (N, S, S) -> labels shaped like the one-class score: (N, T) per token cell
        (1 if any pixel of the cell is anomalous), or (N, 1) per patch (1 if any pixel is)."""
        gt = gt_patches.float()
        if not self.one_class_head.per_token:
            return gt.amax(dim=(1, 2))[:, None]  # (N, 1)
        grid = self.universal_model.tokenizer.grid_size
        pooled = torch.nn.functional.adaptive_max_pool2d(gt[:, None], grid)  # (N, 1, g, g)
        return pooled.reshape(gt.shape[0], grid * grid)  # (N, T)

    def training_losses(self, joint_ids: torch.Tensor, domain_ids: torch.Tensor,
                        labels: torch.Tensor | None = None, mlm_weight: float = 1.0,
                        hidden: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"one_class": SVDD or BCE loss, "mlm": masked-token loss (LoRA only), "loss": their sum}.

        Takes joint ids (N, T) (`tokenize(patches)`): the tokenizer is frozen, so a training scene is
        tokenised once, not once per epoch. Under LoRA the encoder's own masked-token loss on the target
        scene keeps the adapted encoder a language model, a second guard (besides the bias-free map)
        against SVDD's collapse onto c. `hidden` (N, T, H): the embeddings of `joint_ids` when the caller holds
        them (`embeddings`; without LoRA the encoder never changes while the head trains).
        """
        encoder = self.universal_model.encoder
        losses: dict[str, torch.Tensor] = {}
        if self.one_class_head is not None:
            if hidden is None:
                hidden = encoder(joint_ids, domain_ids, pretrain=False)  # (N, T, H)
            losses["one_class"] = self.one_class_head.loss(hidden, labels)
        if self.use_lora and mlm_weight > 0:
            mlm_loss, _, _ = encoder(joint_ids, domain_ids, pretrain=True)
            losses["mlm"] = mlm_weight * mlm_loss
        if not losses:
            raise RuntimeError("nothing to train: no one-class head and no LoRA adapters")
        losses["loss"] = sum(losses.values())
        return losses

    @torch.no_grad()
    def embeddings(self, joint_ids: torch.Tensor, domain_ids: torch.Tensor) -> torch.Tensor:
        """The encoder's embeddings (N, T, H) of joint ids (N, T) under domains (N,), in eval mode (no dropout)."""
        was_training = self.training
        self.train(False)
        try:
            return self.universal_model.encoder(joint_ids, domain_ids, pretrain=False)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def init_one_class_center(self, hidden_batches) -> None:
        """Fix the SVDD centre (and the embeddings' mean) from the initial embeddings: a sequence of (N, T, H)."""
        self.one_class_head.init_center(hidden_batches)

    # ------------------------------------------------------------------ whole scene
    def score_scene(self, cube: np.ndarray, domain_id: int, batch_size: int = AnomalyConfig.inference_batch_size,
                    transform: Callable[[np.ndarray], np.ndarray] | None = None,
                    stride: int | None = None) -> SceneScores:
        """Every head's (H, W) map of a scene and their fusion: `anomaly.scoring.score_scene`."""
        return score_scene(self, cube, domain_id, batch_size, transform, stride)

    @classmethod
    def from_checkpoint(cls, path, map_location: str | torch.device = "cpu"
                        ) -> tuple["HSIAnomalyDetector", dict[str, Any]]:
        """Rebuild a trained detector from `anomaly_detector.pth` (its encoder and tokenizer from their own
        checkpoints, sha256-checked); returns (detector in eval mode, ckpt), as the other models do."""
        from anomaly.loading import load_detector  # checkpoint I/O lives outside the model file (STYLE)

        detector, _, ckpt, _ = load_detector(path, torch.device(map_location))
        return detector, ckpt

    def generate_anomaly_map(self, cube: np.ndarray, domain_id: int,
                             batch_size: int = AnomalyConfig.inference_batch_size,
                             transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Spec 6.2: the fused (H, W) float32 anomaly map of a scene (see `score_scene`)."""
        return self.score_scene(cube, domain_id, batch_size, transform=transform).anomaly_map
