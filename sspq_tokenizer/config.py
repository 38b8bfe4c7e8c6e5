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
    seed: int = 66
    device: str = "auto"
    pretrain_datasets: list[SceneEntry] = field(default_factory=default_scenes)
    num_bands: int = 128
    normalize: str = "minmax"
    patch_size: int = 8
    stride: int = 4
    spatial_downsample: int = 1
    spectral_tokens: str = "grid"
    max_patches_per_scene: int | None = None
    val_fraction: float = 0.1
    K_s: int = 64
    K_x: int = 64
    hidden_dim: int = 32
    num_layers: int = 4
    kernel_size: int = 3
    band_stride: int = 1
    pooled_length: int = 8
    encoder_channels: list[int] = field(default_factory=lambda: [32, 32])
    commitment_beta: float = 0.25
    ema_decay: float = 0.8
    dead_code_threshold: float = 1.0
    batch_size: int = 64
    num_epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True
    noise_std: float = 0.01
    amp: bool = True
    cpu_threads: int = 0
    output_dir: str = "checkpoints/tokenizer"

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
