"""Stage 1 config: `TokenizerConfig`, read from configs/tokenizer.yaml (keys keep the spec's names, spec 4.4).

    cfg = load_config(TokenizerConfig, "configs/tokenizer.yaml", ["K_s=32"])
    tok = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data.scenes import SceneEntry, default_scenes
from sspq_tokenizer.choices import TOKEN_MODES
from utils.config import check

NORMALIZE_METHODS = ("minmax", "zscore")


@dataclass
class TokenizerConfig:
    seed: int = field(default=66, metadata={"help": "seeds weights, patch subsampling, the train/val split and "
                                                     "data order"})
    device: str = field(default="auto", metadata={"help": "auto = cuda:0 when present, else cpu; or cpu / cuda / "
                                                           "cuda:N"})
    pretrain_datasets: list[SceneEntry] = field(
        default_factory=default_scenes,
        metadata={"help": "scenes to learn the codebooks from (name, data_path, domain_id; optional cube_key, gt_key, "
                          "gt_path, cube_layout); labels are never read; default: the embedded synthetic scene, so "
                          "that a fresh checkout runs"})
    num_bands: int = field(default=128, metadata={"help": "every scene is resampled to this many bands, so one "
                                                           "tokenizer reads every sensor"})
    normalize: str = field(default="minmax", metadata={"help": "per-scene normalisation: minmax or zscore"})
    patch_size: int = field(default=8, metadata={"help": "S: patches are S x S pixels; T = (S / "
                                                          "spatial_downsample)^2 tokens feed Stage 2 (64 here: "
                                                          "CPU-sized)"})
    stride: int = field(default=4, metadata={"help": "patch step when cutting training patches (<= patch_size); "
                                                      "half the patch, so patches overlap"})
    spatial_downsample: int = field(default=1, metadata={"help": "d: a token cell is d x d pixels; 1 = one token "
                                                                  "per pixel (per-pixel scores)"})
    spectral_tokens: str = field(default="grid", metadata={"help": "grid = one spectral code per token cell "
                                                                    "(per-pixel spectra); patch = the spec's one "
                                                                    "code per patch"})
    max_patches_per_scene: int | None = field(default=300, metadata={"help": "random subset of each scene's patches "
                                                                              "(null = all); bounds CPU time per "
                                                                              "epoch"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of patches held out to pick the best epoch "
                                                                "by reconstruction error"})
    K_s: int = field(default=64, metadata={"help": "spectral codebook size; 64 is CPU-sized (the spec's GPU size "
                                                    "is 256)"})
    K_x: int = field(default=64, metadata={"help": "spatial codebook size; joint vocabulary K_s * K_x"})
    hidden_dim: int = field(default=16, metadata={"help": "TCN width and latent / code vector size of both "
                                                           "branches; 16 is CPU-sized (the spec's is 64)"})
    num_layers: int = field(default=3, metadata={"help": "residual dilated TCN blocks (dilations 1, 2, 4, ...): 3 "
                                                          "blocks span the strided band axis"})
    kernel_size: int = field(default=3, metadata={"help": "TCN kernel along the band axis (odd, length-preserving)"})
    band_stride: int = field(default=4, metadata={"help": "adjacent bands merged per TCN step (128 -> 32 steps): "
                                                           "the main CPU cost lever; 1 = the TCN sees every band"})
    pooled_length: int = field(default=8, metadata={"help": "band steps left after pooling, before the linear map "
                                                             "to the latent"})
    encoder_channels: list[int] = field(default_factory=lambda: [32, 32],
                                        metadata={"help": "spatial CNN widths (a 1x1 conv from the bands, then 3x3 "
                                                          "convs); CPU-sized"})
    commitment_beta: float = field(default=0.25, metadata={"help": "weight of the commitment loss ||z - "
                                                                    "sg(code)||^2 (the VQ-VAE paper's value)"})
    ema_decay: float = field(default=0.8, metadata={"help": "EMA decay of the codebook updates; lower = faster "
                                                             "moving codes, which suits short runs"})
    dead_code_threshold: float = field(default=1.0, metadata={"help": "reseed codes used fewer than this many times "
                                                                       "per batch (EMA); small, so rare (anomaly) "
                                                                       "codes survive"})
    batch_size: int = field(default=64, metadata={"help": "patches per step"})
    num_epochs: int = field(default=10, metadata={"help": "passes over the training patches; the best epoch is "
                                                           "kept"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay"})
    augment: bool = field(default=True, metadata={"help": "random rot90/flip + Gaussian noise on training patches "
                                                           "(scenes have no canonical orientation)"})
    noise_std: float = field(default=0.01, metadata={"help": "std of that noise, in normalised units"})
    amp: bool = field(default=True, metadata={"help": "mixed precision on CUDA (ignored on the CPU, which runs "
                                                       "fp32)"})
    cpu_threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch's default (1 is faster on "
                                                           "a busy shared box)"})
    output_dir: str = field(default="checkpoints/tokenizer", metadata={"help": "best.pth (lowest validation "
                                                                                "reconstruction error) and last.pth "
                                                                                "(for --resume) go here"})

    @property
    def grid_size(self) -> int:
        return self.patch_size // self.spatial_downsample

    def validate(self) -> None:
        check(len(self.pretrain_datasets) >= 1, "pretrain_datasets: list at least one scene")
        names = [entry.name for entry in self.pretrain_datasets]
        check(len(set(names)) == len(names), f"pretrain_datasets: scene names must be unique, got {names}")
        check(self.num_bands >= 2, f"num_bands must be >= 2, got {self.num_bands}")
        check(self.normalize in NORMALIZE_METHODS, f"normalize must be one of {NORMALIZE_METHODS}, "
                                                   f"got {self.normalize!r}")
        check(self.patch_size >= 1, f"patch_size must be >= 1, got {self.patch_size}")
        check(self.stride >= 1, f"stride must be >= 1, got {self.stride}")
        check(self.spatial_downsample >= 1, f"spatial_downsample must be >= 1, got {self.spatial_downsample}")
        check(self.patch_size % self.spatial_downsample == 0,
              f"patch_size {self.patch_size} must be divisible by spatial_downsample {self.spatial_downsample} "
              f"(the token grid is patch_size / spatial_downsample cells wide)")
        check(self.spectral_tokens in TOKEN_MODES, f"spectral_tokens must be one of {TOKEN_MODES}, "
                                                   f"got {self.spectral_tokens!r}")
        check(self.max_patches_per_scene is None or self.max_patches_per_scene >= 2,
              f"max_patches_per_scene must be >= 2 or null (all patches), got {self.max_patches_per_scene}")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        check(self.K_s >= 2, f"K_s must be >= 2, got {self.K_s}")
        check(self.K_x >= 2, f"K_x must be >= 2, got {self.K_x}")
        check(self.hidden_dim >= 1, f"hidden_dim must be >= 1, got {self.hidden_dim}")
        check(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        check(self.kernel_size >= 1 and self.kernel_size % 2 == 1,
              f"kernel_size must be odd and >= 1 (length-preserving TCN), got {self.kernel_size}")
        check(self.band_stride >= 1 and self.num_bands % self.band_stride == 0,
              f"band_stride {self.band_stride} must be >= 1 and divide num_bands {self.num_bands}")
        check(self.pooled_length >= 1, f"pooled_length must be >= 1, got {self.pooled_length}")
        check(len(self.encoder_channels) >= 1 and all(c >= 1 for c in self.encoder_channels),
              f"encoder_channels must list positive layer widths, got {self.encoder_channels}")
        check(self.commitment_beta >= 0.0, f"commitment_beta must be >= 0, got {self.commitment_beta}")
        check(0.0 <= self.ema_decay < 1.0, f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        check(self.dead_code_threshold >= 0.0, f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")
        check(self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}")
        check(self.num_epochs >= 1, f"num_epochs must be >= 1, got {self.num_epochs}")
        check(self.lr > 0.0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0.0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.noise_std >= 0.0, f"noise_std must be >= 0, got {self.noise_std}")
        check(self.cpu_threads >= 0, f"cpu_threads must be >= 0 (0 = torch's default), got {self.cpu_threads}")
        check(bool(self.output_dir.strip()), "output_dir must not be empty")

    def spectral_cfg(self) -> dict[str, Any]:
        """SpectralTCNVQVAE kwargs."""
        return {"num_bands": self.num_bands, "hidden_dim": self.hidden_dim, "codebook_size": self.K_s,
                "num_layers": self.num_layers, "kernel_size": self.kernel_size,
                "commitment_beta": self.commitment_beta, "cell_size": self.spatial_downsample,
                "token_mode": self.spectral_tokens, "band_stride": self.band_stride, "pooled_length": self.pooled_length,
                "ema_decay": self.ema_decay, "dead_code_threshold": self.dead_code_threshold}

    def spatial_cfg(self) -> dict[str, Any]:
        """SpatialCNNVQVAE kwargs."""
        return {"num_bands": self.num_bands, "hidden_dim": self.hidden_dim, "codebook_size": self.K_x,
                "encoder_channels": list(self.encoder_channels), "commitment_beta": self.commitment_beta,
                "patch_size": self.patch_size, "downsample": self.spatial_downsample,
                "ema_decay": self.ema_decay, "dead_code_threshold": self.dead_code_threshold}
