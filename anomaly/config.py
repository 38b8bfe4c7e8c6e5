"""Stage 3 configuration: the anomaly detector's YAML (`configs/anomaly.yaml`) as a typed dataclass.

The spec's keys (spec 7: anomaly_batch_size, anomaly_epochs, learning_rate_anomaly, freeze_encoder,
use_lora, head_weights) plus what the scripts need. Preprocessing (num_bands, normalisation, patch
size, stride) is NOT here: it comes from the tokenizer checkpoint that the encoder checkpoint names
(docs/design.md "Self-describing checkpoints").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anomaly.head_registry import HEAD_NAMES
from data.io import LAYOUTS
from utils.config import check, load_config

NORMALIZERS = ("log_z", "robust_z", "minmax", "rank")


@dataclass
class HeadWeights:
    """Fusion weight of each head's per-scene normalised map; a head with weight 0 is not computed.

    Defaults chosen on the cross-scene protocol (benchmark --mode cross-scene --folds 2): ctx_spec + ctx_rx +
    ctx_lrx + grx + lrx fused best there (0.9760 mean ROC AUC with rx_components 30, 0.9744 on every band; 0.9732
    without ctx_lrx); the token heads (lm_nll, lm_spectral) invert on scenes
    the encoder never saw, one_class lowered the fusion; recon (0.53) and rarity (0.35) fail on the synthetic scene.
    """

    lm_nll: float = 0.0
    lm_spectral: float = 0.0
    ctx_spec: float = 1.0
    ctx_rx: float = 1.0
    ctx_lrx: float = 1.0
    recon: float = 0.0
    one_class: float = 0.0
    rarity: float = 0.0
    grx: float = 1.0
    lrx: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in HEAD_NAMES}

    def active(self) -> list[str]:
        return [name for name in HEAD_NAMES if getattr(self, name) > 0]


@dataclass
class LoraSettings:
    """peft LoRA adapters on the BERT attention projections (use_lora: true)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    mlm_weight: float = 1.0  # weight of the target-scene masked-token loss that keeps the adapted encoder a language model


@dataclass
class OneClassSettings:
    """Deep SVDD head (Ruff et al. 2018): bias-free map, centre c fixed from the initial embeddings."""

    per_token: bool = True
    rep_dim: int = 32
    center_eps: float = 0.1
    weight_decay: float = 1e-6


@dataclass
class LocalRXSettings:
    """Dual-window local RX (the `lrx` head)."""

    inner: int = 7
    outer: int = 21
    n_components: int = 30


@dataclass
class AnomalyConfig:
    seed: int = 66
    device: str = "auto"
    amp: bool = True
    data_path: str = "synthetic"
    cube_key: str | None = None
    gt_key: str | None = None
    gt_path: str | None = None  # a separate gt mask file (.npy/.npz/.mat/.hdr/.png/.tif); gt_key names its array
    cube_layout: str = "auto"  # auto | hwb | bhw (data.io: auto reads it from wavelengths / gt, else guesses hwb)
    domain_id: int | str = "auto"  # "auto" (anomaly/domain.py) or an explicit pre-training domain id
    encoder_ckpt: str = "checkpoints/encoder/universal_hsi_encoder.pth"
    output_dir: str = ""  # detector folder; "" = checkpoints/anomaly/<scene name> (anomaly/run_folders.py)
    out_dir: str = ""  # inference output folder; "" = outputs/<scene name>
    anomaly_batch_size: int = 16
    anomaly_epochs: int = 20
    learning_rate_anomaly: float = 1e-4
    max_train_patches: int = 0
    freeze_encoder: bool = True
    use_lora: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    one_class: OneClassSettings = field(default_factory=OneClassSettings)
    head_weights: HeadWeights = field(default_factory=HeadWeights)
    supervised: bool = False
    supervised_data_path: str = ""
    lm_block: int = 2
    score_offsets: int = 2
    adapt_steps: int = 0
    adapt_lr: float = 1e-2
    normalize_scores: str = "log_z"
    fused_smoothing: float = 0.5  # Gaussian sigma (pixels) on the fused map; 0 = off
    inference_batch_size: int = 256
    inference_stride: int = 0
    local_rx: LocalRXSettings = field(default_factory=LocalRXSettings)
    rx_components: int = 30  # leading principal components of the global RX heads (grx, ctx_rx); 0 = every band

    def validate(self) -> None:
        check(self.anomaly_batch_size >= 1, f"anomaly_batch_size: must be >= 1, got {self.anomaly_batch_size}")
        check(self.inference_batch_size >= 1, f"inference_batch_size: must be >= 1, got {self.inference_batch_size}")
        check(self.inference_stride >= 0, f"inference_stride: must be >= 0 (0 = the patch size), got {self.inference_stride}")
        check(self.anomaly_epochs >= 0, f"anomaly_epochs: must be >= 0, got {self.anomaly_epochs}")
        check(self.learning_rate_anomaly > 0, f"learning_rate_anomaly: must be > 0, got {self.learning_rate_anomaly}")
        check(self.max_train_patches >= 0, f"max_train_patches: must be >= 0 (0 = all), got {self.max_train_patches}")
        if isinstance(self.domain_id, str):
            check(self.domain_id == "auto", f"domain_id: must be an integer id >= 0 or 'auto', got '{self.domain_id}'")
        else:
            check(self.domain_id >= 0, f"domain_id: must be >= 0 (or 'auto'), got {self.domain_id}")
        check(self.lm_block >= 1, f"lm_block: must be >= 1, got {self.lm_block}")
        check(self.score_offsets >= 1, f"score_offsets: must be >= 1, got {self.score_offsets}")
        check(self.adapt_steps >= 0, f"adapt_steps: must be >= 0 (0 = no adaptation), got {self.adapt_steps}")
        check(self.adapt_lr > 0, f"adapt_lr: must be > 0, got {self.adapt_lr}")
        check(self.freeze_encoder, "freeze_encoder: false would fine-tune the whole encoder, which Stage 3 does not "
              "support; keep freeze_encoder: true and set use_lora: true to adapt the encoder")
        check(self.normalize_scores in NORMALIZERS,
              f"normalize_scores: must be one of {', '.join(NORMALIZERS)}, got '{self.normalize_scores}'")
        check(self.fused_smoothing >= 0, f"fused_smoothing: must be >= 0 (0 = off), got {self.fused_smoothing}")
        check(bool(self.data_path.strip()), "data_path: must name a scene file or 'synthetic'")
        check(self.cube_layout in LAYOUTS, f"cube_layout: must be one of {', '.join(LAYOUTS)}, got '{self.cube_layout}'")
        weights = self.head_weights.as_dict()
        for name, weight in weights.items():
            check(weight >= 0, f"head_weights.{name}: must be >= 0 (0 switches the head off), got {weight}")
        check(any(w > 0 for w in weights.values()), "head_weights: at least one head needs a weight > 0")
        if self.supervised:
            check(bool(self.supervised_data_path.strip()),
                  "supervised: true needs supervised_data_path, a labelled scene other than the scored one")
            check(self.head_weights.one_class > 0,
                  "supervised: true trains the one-class head with BCE; give head_weights.one_class a weight > 0")
        lora = self.lora
        check(lora.r >= 1, f"lora.r: must be >= 1, got {lora.r}")
        check(lora.alpha > 0, f"lora.alpha: must be > 0, got {lora.alpha}")
        check(0 <= lora.dropout < 1, f"lora.dropout: must be in [0, 1), got {lora.dropout}")
        check(len(lora.target_modules) > 0, "lora.target_modules: name at least one module (e.g. [query, value])")
        check(lora.mlm_weight >= 0, f"lora.mlm_weight: must be >= 0, got {lora.mlm_weight}")
        oc = self.one_class
        check(oc.rep_dim >= 1, f"one_class.rep_dim: must be >= 1, got {oc.rep_dim}")
        check(oc.center_eps > 0, f"one_class.center_eps: must be > 0, got {oc.center_eps}")
        check(oc.weight_decay >= 0, f"one_class.weight_decay: must be >= 0, got {oc.weight_decay}")
        lrx = self.local_rx
        check(lrx.inner >= 1 and lrx.inner % 2 == 1, f"local_rx.inner: must be an odd window >= 1, got {lrx.inner}")
        check(lrx.outer > lrx.inner and lrx.outer % 2 == 1,
              f"local_rx.outer: must be an odd window larger than local_rx.inner ({lrx.inner}), got {lrx.outer}")
        check(lrx.n_components >= 1, f"local_rx.n_components: must be >= 1, got {lrx.n_components}")
        check(self.rx_components >= 0, f"rx_components: must be >= 0 (0 = every band), got {self.rx_components}")


def load_anomaly_config(config_path: str | None, overrides: list[str] | None = None,
                        **flags: str | None) -> AnomalyConfig:
    """The Stage 3 config with `--set` overrides, then the scripts' own flags (`data_path=...`, ...) when given."""
    extra = [f"{key}={value}" for key, value in flags.items() if value]
    return load_config(AnomalyConfig, config_path, list(overrides or []) + extra)
