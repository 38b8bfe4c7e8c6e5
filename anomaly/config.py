"""Stage 3 configuration: the anomaly detector's YAML (`configs/anomaly.yaml`) as a typed dataclass.

The spec's keys (spec 7: anomaly_batch_size, anomaly_epochs, learning_rate_anomaly, freeze_encoder,
use_lora, head_weights) plus what the scripts need. Preprocessing (num_bands, normalisation, patch
size, stride) is NOT here: it comes from the tokenizer checkpoint that the encoder checkpoint names
(docs/design.md "Self-describing checkpoints").
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field, make_dataclass

from anomaly.head_registry import HEAD_NAMES, HEADS
from data.io import LAYOUTS
from utils.config import check, load_config

NORMALIZERS = ("log_z", "robust_z", "minmax", "rank")
SCORE_LAYOUTS = ("block", "pairs", "lattice")  # score_layout (anomaly/blind_spot_windows.py)


def _weights_as_dict(self) -> dict[str, float]:
    return {name: float(getattr(self, name)) for name in HEAD_NAMES}


def _active_heads(self) -> list[str]:
    return [name for name in HEAD_NAMES if getattr(self, name) > 0]


# One field per head of the registry (anomaly/head_registry.py), its default weight and help text from there.
HeadWeights = make_dataclass(
    "HeadWeights", [(head.name, float, field(default=head.weight, metadata={"help": head.help}))
                    for head in HEADS.values()],
    namespace={"__module__": __name__, "as_dict": _weights_as_dict, "active": _active_heads,
               "__doc__": "Fusion weight of each head's per-scene normalised map; a head with weight 0 is not "
                          "computed. The defaults fuse the five heads that held up on scenes the encoder never saw "
                          "(chosen on the cross-scene protocol, never on a scored scene)."})


@dataclass
class LoraSettings:
    """peft LoRA adapters on the BERT attention projections (use_lora: true), fitted to the scored scene by the
    `adapt_steps` of the pre-training objective (anomaly/adapt.py)."""

    r: int = field(default=8, metadata={"help": "adapter rank; small: one scene has few patches to fit"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r); 2 r, peft's "
                                                          "usual choice"})
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"],
                                      metadata={"help": "BertSelfAttention projections that get adapters; query and "
                                                        "value, as in the LoRA paper"})


@dataclass
class OneClassSettings:
    """Deep SVDD head (Ruff et al. 2018): bias-free map, centre c fixed from the initial embeddings."""

    per_token: bool = field(default=True, metadata={"help": "Deep SVDD per token (true: per-pixel scores) or on "
                                                             "the patch-mean embedding (false: the spec's variant)"})
    rep_dim: int = field(default=32, metadata={"help": "output size of the bias-free SVDD map"})
    center_eps: float = field(default=0.1, metadata={"help": "each |c_i| is pushed to at least this, so the centre "
                                                              "is never 0 (guards against the trivial collapse)"})
    weight_decay: float = field(default=1e-6, metadata={"help": "Adam weight decay on the head (Deep SVDD's "
                                                                 "regulariser)"})


@dataclass
class LocalRXSettings:
    """Dual-window local RX (the `lrx` and `ctx_lrx` heads)."""

    inner: int = field(default=7, metadata={"help": "guard window of local RX (odd, pixels); 7/21 is the field's "
                                                     "standard dual window (ABU, HYDICE)"})
    outer: int = field(default=21, metadata={"help": "outer window of local RX (odd, > inner); the same windows as "
                                                      "the benchmark's LRX baseline"})
    n_components: int = field(default=30, metadata={"help": "principal components local RX works on (capped at the "
                                                             "band count); fewer components keep the local "
                                                             "covariances well conditioned"})


@dataclass
class AnomalyConfig:
    seed: int = field(default=66, metadata={"help": "seeds python, numpy and torch"})
    device: str = field(default="auto", metadata={"help": "auto = cuda:0 when present, else cpu; or cpu, cuda, "
                                                           "cuda:N"})
    amp: bool = field(default=True, metadata={"help": "mixed precision on CUDA (no effect on the CPU)"})
    data_path: str = field(default="synthetic", metadata={"help": "target scene (.npz/.npy/.mat/.hdr) or "
                                                                   "'synthetic[:SEED]' (the embedded scene, so that "
                                                                   "a fresh checkout runs)"})
    cube_key: str | None = field(default=None, metadata={"help": "array name of the cube inside data_path when it "
                                                                  "is not found by name"})
    gt_key: str | None = field(default=None, metadata={"help": "array name of the gt mask (read for metrics only, "
                                                                "never for training unless supervised)"})
    gt_path: str | None = field(default=None, metadata={"help": "gt mask in a file of its own "
                                                                 "(.npy/.npz/.mat/ENVI .hdr/PNG/TIFF; 0/255 images "
                                                                 "read as 0/1); gt_key names its array"})
    cube_layout: str = field(default="auto", metadata={"help": "auto = from wavelengths / gt (a WARNING when it must "
                                                                "guess (H, W, B)); or hwb / bhw"})
    domain_id: int | str = field(default="auto", metadata={"help": "pre-training domain embedding: auto = the "
                                                                    "pre-training scene of the same name, else the "
                                                                    "one with the nearest mean prepared spectrum "
                                                                    "(cosine); an integer id overrides"})
    encoder_ckpt: str = field(default="checkpoints/encoder/universal_hsi_encoder.pth",
                              metadata={"help": "Stage 2 checkpoint (it names its tokenizer parent) or a release "
                                                "folder; where encoder/pretrain_mtp.py writes by default; when this "
                                                "default path holds nothing, the released encoder weights/ is used "
                                                "(logged)"})
    output_dir: str = field(default="", metadata={"help": "where train_anomaly.py writes anomaly_detector.pth (and "
                                                           "last.pth); \"\" = checkpoints/anomaly/<scene name>, one "
                                                           "folder per scene; a folder given here is used as it is"})
    out_dir: str = field(default="", metadata={"help": "inference output folder; \"\" = outputs/<scene name>"})
    anomaly_batch_size: int = field(default=16, metadata={"help": "patches per training step (spec 7)"})
    anomaly_epochs: int = field(default=5, metadata={"help": "passes over the target scene's patches when a head "
                                                              "trains; 5 keeps a 2-core CPU run short (the spec's GPU "
                                                              "size is 20)"})
    learning_rate_anomaly: float = field(default=1e-3, metadata={"help": "Adam learning rate of the trained heads "
                                                                          "(the one-class head); high enough for 5 "
                                                                          "epochs (the spec's GPU size is 1e-4)"})
    max_train_patches: int = field(default=0, metadata={"help": "0 = train on every patch of the scene; N = a fixed "
                                                                 "random subset of N patches (bounds the time on "
                                                                 "large scenes)"})
    freeze_encoder: bool = field(default=True, metadata={"help": "the tokenizer and encoder weights never train "
                                                                  "(full fine-tuning is not supported; use use_lora)"})
    use_lora: bool = field(default=False, metadata={"help": "true = peft LoRA adapters in the BERT attention, fitted "
                                                             "to the scored scene with the domain row by adapt_steps "
                                                             "(needs adapt_steps > 0)"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "LoRA adapters (use_lora: true)"})
    one_class: OneClassSettings = field(default_factory=OneClassSettings,
                                        metadata={"help": "Deep SVDD head (head_weights.one_class > 0)"})
    head_weights: HeadWeights = field(default_factory=HeadWeights,
                                      metadata={"help": "fusion weights of the per-scene head maps; 0 = head off "
                                                        "(not computed)"})
    supervised: bool = field(default=False, metadata={"help": "true = BCE on a labelled scene other than the "
                                                               "scored one; off: labels are never in the score"})
    supervised_data_path: str = field(default="", metadata={"help": "that labelled training scene (must differ "
                                                                     "from data_path)"})
    lm_block: int = field(default=2, metadata={"help": "side (tokens) of the core blocks the context heads hide and "
                                                        "score (anomaly/blind_spot.py); small blocks keep the context "
                                                        "close to the hidden pixels"})
    score_offsets: int = field(default=2, metadata={"help": "phases of the core tiling along the diagonal; a pixel's "
                                                             "score is its maximum over them (2: every pixel also "
                                                             "sees a second block position, at twice the cost)"})
    score_layout: str = field(default="block", metadata={"help": "how cores share windows (anomaly/blind_spot_windows"
                                                                ".py): block = one core per window, centred; pairs / "
                                                                "lattice = 2 / 4 cores of one parity class a window, "
                                                                "one core apart (with lm_block 2: half / a quarter of "
                                                                "the windows, each core nearer its window's edge)"})
    refine_share: float = field(default=0.0, metadata={"help": "share of the pixels, the highest of each context "
                                                                "head's map, scored again one core a window at two "
                                                                "phases, their score the maximum over every view; 0 = "
                                                                "off"})
    context_ids: bool = field(default=False, metadata={"help": "true = the windows also show the encoder the joint ids "
                                                              "beyond the guard rings (every window tokenised); false "
                                                              "= the context is the cells' spectra alone (an encoder "
                                                              "pre-trained without spectra always sees the ids)"})
    adapt_steps: int = field(default=0, metadata={"help": "label-free steps of the pre-training objective fitting the "
                                                           "scene's domain row (and LoRA adapters with use_lora) on its "
                                                           "own blind-spot windows before scoring (anomaly/adapt.py); "
                                                           "0 = off"})
    adapt_lr: float = field(default=1e-2, metadata={"help": "Adam learning rate of that fit (one embedding row and "
                                                             "low-rank adapters: a high rate converges in few steps)"})
    normalize_scores: str = field(default="log_z", metadata={"help": "per-scene head normalisation before fusion: "
                                                                      "log_z (sign(z) log(1+|z|) of the robust z "
                                                                      "(x-median)/(1.4826 MAD): heavy tails "
                                                                      "compressed, so no head dominates), robust_z, "
                                                                      "minmax or rank"})
    extent_window: int = field(default=13, metadata={"help": "side (pixels) of the square whose grey opening is "
                                                              "subtracted from the fused map (a white top-hat): a "
                                                              "response wider than it in every direction (a roof, a "
                                                              "shoreline, a field) falls against targets of a few "
                                                              "pixels; 0 = off; chosen on the cross-scene protocol"})
    line_length: int = field(default=17, metadata={"help": "length (pixels) of the lines whose largest opening (8 "
                                                          "directions) is subtracted after the top-hat: long thin "
                                                          "responses (shorelines, roof edges, roads) fall against "
                                                          "targets; 0 = off; chosen on the cross-scene protocol"})
    line_weight: float = field(default=0.5, metadata={"help": "share of that line opening subtracted; 0 = off"})
    fused_smoothing: float = field(default=0.6, metadata={"help": "sigma (pixels) of the Gaussian filter on the "
                                                                   "fused map, which pools a pixel's evidence with "
                                                                   "its neighbours'; 0 = off"})
    inference_batch_size: int = field(default=256, metadata={"help": "patches per inference batch (memory is "
                                                                      "bounded by this, not by the scene)"})
    inference_stride: int = field(default=0, metadata={"help": "patch step when scoring: 0 = the patch size (each "
                                                                "pixel in one patch: fastest); smaller steps average "
                                                                "overlapping patches at a higher cost"})
    local_rx: LocalRXSettings = field(default_factory=LocalRXSettings,
                                      metadata={"help": "windows of the local RX heads (lrx, ctx_lrx)"})
    rx_components: int = field(default=30, metadata={"help": "leading principal components global RX works on, in "
                                                              "grx (prepared cube) and ctx_rx (residuals); 0 = every "
                                                              "band (classical RX); fewer drop the noisy trailing "
                                                              "bands"})
    pfa: float = field(default=1e-3, metadata={"help": "false-alarm rate of the detected objects: the threshold is "
                                                        "the (1 - pfa) quantile of the scene's valid fused scores "
                                                        "(detections.csv / .geojson; anomaly/detections.py)"})
    detection_threshold: float | None = field(default=None, metadata={"help": "an explicit fused score to threshold "
                                                                               "the objects at instead of pfa; null "
                                                                               "= from pfa"})

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
        check(0.0 <= self.refine_share < 1.0, f"refine_share: must lie in [0, 1), got {self.refine_share}")
        check(self.score_layout in SCORE_LAYOUTS,
              f"score_layout: must be one of {', '.join(SCORE_LAYOUTS)}, got '{self.score_layout}'")
        check(self.adapt_steps >= 0, f"adapt_steps: must be >= 0 (0 = no adaptation), got {self.adapt_steps}")
        check(self.adapt_lr > 0, f"adapt_lr: must be > 0, got {self.adapt_lr}")
        check(not self.use_lora or self.adapt_steps > 0,
              "use_lora: true needs adapt_steps > 0: the adapters are fitted to the scene by those steps")
        check(self.freeze_encoder, "freeze_encoder: false would fine-tune the whole encoder, which Stage 3 does not "
              "support; keep freeze_encoder: true and set use_lora: true to adapt the encoder")
        check(self.normalize_scores in NORMALIZERS,
              f"normalize_scores: must be one of {', '.join(NORMALIZERS)}, got '{self.normalize_scores}'")
        check(self.extent_window >= 0, f"extent_window: must be >= 0 (0 = off), got {self.extent_window}")
        check(self.line_length >= 0, f"line_length: must be >= 0 (0 = off), got {self.line_length}")
        check(self.line_weight >= 0, f"line_weight: must be >= 0 (0 = off), got {self.line_weight}")
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
        check(len(lora.target_modules) > 0, "lora.target_modules: name at least one module (e.g. [query, value])")
        oc = self.one_class
        check(oc.rep_dim >= 1, f"one_class.rep_dim: must be >= 1, got {oc.rep_dim}")
        check(oc.center_eps > 0, f"one_class.center_eps: must be > 0, got {oc.center_eps}")
        check(oc.weight_decay >= 0, f"one_class.weight_decay: must be >= 0, got {oc.weight_decay}")
        lrx = self.local_rx
        check(lrx.inner >= 1 and lrx.inner % 2 == 1, f"local_rx.inner: must be an odd window >= 1, got {lrx.inner}")
        check(lrx.outer > lrx.inner and lrx.outer % 2 == 1,
              f"local_rx.outer: must be an odd window larger than local_rx.inner ({lrx.inner}), got {lrx.outer}")
        check(lrx.n_components >= 1, f"local_rx.n_components: must be >= 1, got {lrx.n_components}")
        check(0 < self.pfa < 1, f"pfa: must lie in (0, 1) (a false-alarm rate), got {self.pfa}")
        check(self.detection_threshold is None or math.isfinite(self.detection_threshold),
              f"detection_threshold: must be a finite score or null (= from pfa), got {self.detection_threshold}")
        check(self.rx_components >= 0, f"rx_components: must be >= 0 (0 = every band), got {self.rx_components}")


def load_anomaly_config(config_path: str | None, overrides: list[str] | None = None,
                        **flags: str | None) -> AnomalyConfig:
    """The Stage 3 config with `--set` overrides, then the scripts' own flags (`data_path=...`, ...) when given."""
    extra = [f"{key}={value}" for key, value in flags.items() if value]
    return load_config(AnomalyConfig, config_path, list(overrides or []) + extra)
