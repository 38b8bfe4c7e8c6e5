"""HSIAnomalyDetector (spec 6.2): the frozen (or LoRA-adapted) universal model, the anomaly heads, and the scene
preparation its tokenizer was trained with.

    detector, ckpt = HSIAnomalyDetector.from_checkpoint("checkpoints/anomaly/abu-urban-1/anomaly_detector.pth")
    scores = detector.score_scene(scene.cube, domain_id="auto", wavelengths=scene.wavelengths, name=scene.name)
    anomaly_map = detector.generate_anomaly_map(cube, domain_id)   # (H, W) float32 = scores.anomaly_map
    out = detector(patches, domain_ids, mode="eval")               # per-head (N, S, S) pixel maps + "combined"

A detector rebuilt from its checkpoint takes the cube as it comes from the file, of any band count: it fits the
tokenizer's preprocessing (band resampling, normalisation) on that cube itself, exactly as the command line does,
so both give the same map (docs/design.md, "Band resampling"). The heads are anomaly/heads.py's and
anomaly/blind_spot.py's (the head registry: anomaly/head_registry.py); streaming a scene through them is
anomaly/scoring.py, the checkpoint chain anomaly/checkpoint.py, the settings a run may change anomaly/settings.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anomaly.checkpoint import DetectorFile, read_detector
from anomaly.config import AnomalyConfig
from anomaly.domain import DomainChoice, choose_domain
from anomaly.fusion import fuse_scores
from anomaly.head_registry import CONTEXT_HEADS, HEADS, ordered
from anomaly.heads import (OneClassHead, code_log_frequencies, compute_code_rarity, compute_lm_nll_scores,
                           compute_recon_error, tokens_to_pixels)
from anomaly.lora import ADAPTER_KEY, adapter_parameter_count, inject_lora
from anomaly.scoring import SceneScores, score_scene
from anomaly.settings import inference_settings
from data.blocks import NoDataRows
from data.product import check_valid
from data.preprocess import SpectralPreprocessor, mean_spectrum
from utils.checkpoint import describe_load_error
from utils.errors import CheckpointError, ConfigError, DataError

SPEC_HEAD_WEIGHTS = {"lm_nll": 0.4, "recon": 0.3, "one_class": 0.3}  # spec 6.2's constructor default
DOMAIN_TABLE_KEY = "universal_model.encoder.domain_embedding.weight"


class HSIAnomalyDetector(nn.Module):
    """Frozen universal model (tokenizer + BERT encoder) with anomaly heads on top.

    freeze_encoder must be True: the tokenizer and the encoder's own weights never train. With use_lora, peft
    LoRA adapters (`config.lora`) are injected into the BERT attention projections; they stay frozen here and are
    fitted to the scored scene by anomaly/adapt.py (the pre-training objective, never the heads' loss).
    `config` holds every other setting (blind-spot block and phases, normalisation, RX windows, ...); None = the
    AnomalyConfig defaults. `preprocessing` ({"num_bands", "normalize"}, the tokenizer checkpoint's) lets the
    detector prepare raw cubes itself; without it (a detector built by hand) cubes must come prepared.
    `domains` ({"num_domains", "domains", "domain_spectra", "encoder"}) lets it resolve `domain_id="auto"`.
    """

    def __init__(self, universal_model: nn.Module, hidden_size: int, freeze_encoder: bool = True,
                 use_lora: bool = False, head_weights: dict[str, float] | None = None, *,
                 config: AnomalyConfig | None = None, objective: str = "svdd",
                 preprocessing: dict[str, Any] | None = None, domains: dict[str, Any] | None = None):
        super().__init__()
        if not freeze_encoder:
            raise ConfigError("freeze_encoder: false (full fine-tuning) is not supported; use use_lora: true")
        weights = dict(SPEC_HEAD_WEIGHTS if head_weights is None else head_weights)
        unknown = sorted(set(weights) - set(HEADS))
        if unknown:
            raise ConfigError(f"head_weights: unknown head(s) {unknown}; the heads are {', '.join(HEADS)}")
        self.head_weights = {name: float(w) for name, w in weights.items() if w > 0}
        if not self.head_weights:
            raise ConfigError("head_weights: at least one head needs a weight > 0")
        self.config = config or AnomalyConfig()
        self.universal_model = universal_model
        self.use_lora = use_lora
        self.preprocessing = preprocessing
        self.domains = domains
        tokenizer = universal_model.tokenizer
        self.patch_size = tokenizer.patch_size
        self.num_bands = tokenizer.num_bands
        self.stride = self.config.inference_stride or self.patch_size
        universal_model.requires_grad_(False)
        if use_lora:
            inject_lora(universal_model.encoder, self.config.lora)
            universal_model.requires_grad_(False)  # the adapters move only in the scene fit (anomaly/adapt.py)
        self.one_class_head = None
        if "one_class" in self.head_weights:
            oc = self.config.one_class
            self.one_class_head = OneClassHead(hidden_size, rep_dim=oc.rep_dim, per_token=oc.per_token,
                                               center_eps=oc.center_eps, objective=objective)
        self.register_buffer("code_log_freq", code_log_frequencies(torch.zeros(tokenizer.K_s)))
        assert self.trainable_parameter_count() == self.head_parameter_count(), (
            f"trainable parameters {self.trainable_parameter_count()} != the heads' {self.head_parameter_count()}")
        self.train(False)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_parts(cls, cfg: AnomalyConfig, model: nn.Module, info: dict[str, Any],
                   supervised: bool) -> "HSIAnomalyDetector":
        """The detector `cfg` describes on top of `model` (anomaly.checkpoint.load_universal_model's model and
        info), its settings checked against the encoder."""
        if isinstance(cfg.domain_id, int) and cfg.domain_id >= info["num_domains"]:
            raise ConfigError(f"domain_id: {cfg.domain_id}, but the encoder knows {info['num_domains']} domains "
                              f"{info['domains'] or ''}; pick the id of the most similar pre-training sensor")
        active = cfg.head_weights.active()
        spectral = [name for name in active if HEADS[name].needs_spectra]
        if spectral and model.encoder.spectral_input_dim == 0:
            raise ConfigError(f"head_weights: {', '.join(spectral)} predict spectra, but the encoder "
                              f"{info['encoder']['path']} was pre-trained without spectral_input; set their weights "
                              f"to 0 or re-run Stage 2 with spectral_input: true")
        grid = model.tokenizer.grid_size
        if set(active) & set(CONTEXT_HEADS) and grid > 1 and cfg.lm_block >= grid:
            raise ConfigError(f"lm_block: {cfg.lm_block} must be smaller than the token grid ({grid}x{grid}), "
                              f"else one scoring mask hides every token")
        tok_cfg = info["tokenizer_config"]
        if cfg.inference_stride > int(tok_cfg["patch_size"]):
            raise ConfigError(f"inference_stride {cfg.inference_stride} is larger than the patch size "
                              f"{tok_cfg['patch_size']}: pixels between patches would go unscored; use 0 (= the "
                              f"patch size) or less")
        return cls(model, info["hidden_size"], cfg.freeze_encoder, cfg.use_lora, cfg.head_weights.as_dict(),
                   config=cfg, objective="bce" if supervised else "svdd",
                   preprocessing={"num_bands": int(tok_cfg["num_bands"]), "normalize": tok_cfg["normalize"]},
                   domains={key: info.get(key) for key in ("num_domains", "domains", "domain_spectra", "encoder")})

    @classmethod
    def from_file(cls, chain: DetectorFile, overrides: list[str] | None = None,
                  settings: AnomalyConfig | None = None) -> "HSIAnomalyDetector":
        """The trained detector of a read checkpoint (anomaly.checkpoint.read_detector), in eval mode, scoring with
        `settings` (anomaly.settings.inference_settings; default: as trained, changed by `overrides`)."""
        path = chain.record["path"]
        settings = settings or inference_settings(chain.trained, list(overrides or []), path)
        detector = cls.from_parts(settings, chain.model, chain.info, chain.supervised)
        state = chain.ckpt["state_dict"]
        if chain.trained.head_weights.one_class > 0 and settings.head_weights.one_class == 0:
            state = {k: v for k, v in state.items() if not k.startswith("one_class_head.")}  # off for this run
        try:
            detector.load_trained_state_dict(state)
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: weights do not fit the detector its config describes: "
                                  f"{describe_load_error(err)}; retrain Stage 3") from None
        return detector.to(next(chain.model.parameters()).device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu"
                        ) -> tuple["HSIAnomalyDetector", dict[str, Any]]:
        """Rebuild a trained detector from `anomaly_detector.pth` (its encoder and tokenizer from their own
        checkpoints, sha256-checked); returns (detector in eval mode, ckpt), as the other models do."""
        chain = read_detector(path, torch.device(map_location))
        return cls.from_file(chain), chain.ckpt

    # ------------------------------------------------------------------ parameters
    def head_parameter_count(self) -> int:
        return 0 if self.one_class_head is None else sum(p.numel() for p in self.one_class_head.parameters())

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """What Stage 3 adds to its parents: head weights and buffers, LoRA adapters, code frequencies, and the
        domain table when it was adapted to the scene."""
        adapted = self.config.adapt_steps > 0
        return {k: v.detach().cpu() for k, v in self.state_dict().items()
                if k.startswith("one_class_head.") or ADAPTER_KEY in k or k == "code_log_freq"
                or (adapted and k == DOMAIN_TABLE_KEY)}

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `trained_state_dict`; the key sets must match exactly."""
        own = self.trained_state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"detector state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> "HSIAnomalyDetector":
        """Heads follow `mode`; the tokenizer (its VQ codebooks move in train mode) and the encoder (frozen while
        the heads train) always stay in eval."""
        super().train(mode)
        self.universal_model.eval()
        return self

    def adapter_parameter_count(self) -> int:
        return adapter_parameter_count(self.universal_model)

    # ------------------------------------------------------------------ per-patch heads
    @property
    def active_heads(self) -> list[str]:
        return ordered(self.head_weights)

    @property
    def device(self) -> torch.device:
        return self.code_log_freq.device

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
            nll = compute_lm_nll_scores(encoder, joint_ids, domain_ids, block=self.config.lm_block, spectra=spectra)
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
        weights: a quick look only. The scene-level heads and the per-scene normalisation the anomaly map
        uses live in `score_scene`. mode "eval" runs without gradients, "train" keeps them.
        """
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        with torch.set_grad_enabled(mode == "train"):
            out = self.head_scores(patches, domain_ids, code_log_freq)
            weights = {name: w for name, w in self.head_weights.items() if name in out}
            if weights:
                out["combined"] = fuse_scores({name: out[name] for name in weights}, weights,
                                              self.config.normalize_scores)
        return out

    # ------------------------------------------------------------------ whole scene
    def prepare(self, cube: np.ndarray, wavelengths: np.ndarray | None = None, source: str | None = None,
                valid: np.ndarray | None = None) -> SpectralPreprocessor | None:
        """The tokenizer's preprocessing fitted on this raw cube (H, W, B_raw) (on its `valid` (H, W) pixels when
        given); None for a detector built by hand (its cubes come prepared). `source` names the scene's file in
        errors."""
        if self.preprocessing is None:
            if cube.shape[2] != self.num_bands:
                raise DataError(f"the cube has {cube.shape[2]} bands but the tokenizer expects {self.num_bands}, "
                                f"and this detector was built without its tokenizer's preprocessing; build it "
                                f"from a checkpoint (HSIAnomalyDetector.from_checkpoint) or prepare the cube")
            return None
        return SpectralPreprocessor.fit(cube, self.preprocessing["num_bands"], self.preprocessing["normalize"],
                                        wavelengths, source=source, valid=valid)  # the fit reads `valid` pixels only

    def choose_domain(self, setting: int | str, cube: np.ndarray, name: str | None,
                      prep: SpectralPreprocessor | None, valid: np.ndarray | None = None,
                      wavelengths: np.ndarray | None = None, source: str | None = None) -> DomainChoice:
        """`domain_id` (an int, or 'auto': the pre-training scene called `name`, else the nearest mean prepared
        spectrum; anomaly/domain.py) for this raw scene; `prep`: its fitted preprocessing (None = fit it if needed)."""
        table = self.domains or {"num_domains": self.universal_model.encoder.num_domains, "domains": {},
                                 "domain_spectra": None, "encoder": {"path": "this detector's encoder"}}
        def spectrum():  # only needed (and the preprocessing only fitted) when the name does not decide
            fitted = prep if prep is not None else self.prepare(cube, wavelengths, source, valid)
            return mean_spectrum(cube, fitted.transform if fitted else None, valid)  # over `valid` pixels only

        return choose_domain(setting, name or "", spectrum, table["domains"], table["domain_spectra"],
                             table["num_domains"], table["encoder"]["path"])

    def score(self, cube: np.ndarray, prep: SpectralPreprocessor | None, domain: DomainChoice,
              batch_size: int | None = None, valid: np.ndarray | None = None) -> SceneScores:
        """`score_scene` once the preprocessing is fitted (`prepare`) and the domain chosen (`choose_domain`)."""
        if valid is not None and prep is None:
            raise DataError("a no-data mask needs the tokenizer's preprocessing (it repairs the no-data pixels); build "
                            "the detector from its checkpoint (HSIAnomalyDetector.from_checkpoint)")
        view = cube if valid is None else NoDataRows(cube, valid)
        scores = score_scene(self, view, domain.domain_id, batch_size or self.config.inference_batch_size,
                             prep.transform if prep else None, self.stride, valid)
        scores.preprocessing = prep.info if prep else None
        scores.domain = domain
        return scores

    def score_scene(self, cube: np.ndarray, domain_id: int | str, wavelengths: np.ndarray | None = None,
                    name: str | None = None, source: str | None = None, batch_size: int | None = None,
                    valid: np.ndarray | None = None) -> SceneScores:
        """Every head's (H, W) map of a raw scene (H, W, B_raw) (ndarray or memmap) and their fusion, with the
        preprocessing fitted on it and the domain chosen for it (`SceneScores.preprocessing`, `.domain`).
        `batch_size`: windows per encoder pass (default `config.inference_batch_size`). `valid` (H, W) bool: the
        pixels that hold data (a product's no-data mask, `Scene.valid`): the others enter no statistic and come out
        NaN in every map."""
        if getattr(cube, "ndim", None) != 3:
            raise DataError(f"expected a cube (H, W, B), got shape {getattr(cube, 'shape', None)}")
        valid = check_valid(valid, cube.shape[:2], source)
        prep = self.prepare(cube, wavelengths, source, valid)
        domain = self.choose_domain(domain_id, cube, name, prep, valid, wavelengths, source)
        return self.score(cube, prep, domain, batch_size, valid)

    def generate_anomaly_map(self, cube: np.ndarray, domain_id: int | str,
                             wavelengths: np.ndarray | None = None) -> np.ndarray:
        """Spec 6.2: the fused (H, W) float32 anomaly map of a raw scene (see `score_scene`). A scene whose file
        carries band centres is resampled over them on the command line: pass them (`Scene.wavelengths`) for the
        same map; without them the bands are resampled over their index."""
        return self.score_scene(cube, domain_id, wavelengths).anomaly_map
