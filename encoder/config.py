"""Stage 2 config: `PretrainConfig`, read from configs/pretrain.yaml (keys keep the spec's names, spec 5.3 / 7).

    cfg = load_config(PretrainConfig, "configs/pretrain.yaml", ["mask_ratio=0.4"])

Preprocessing (num_bands, normalize, patch_size, stride) is NOT here: it comes from the tokenizer
checkpoint named by `tokenizer_ckpt` (docs/design.md "Self-describing checkpoints").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data.scenes import SceneEntry, check_scene_entries, default_scenes
from encoder.choices import ARCH_KEYS, DROPOUT_KEYS, STRATEGIES
from utils.config import check


@dataclass
class PretrainConfig:
    seed: int = 66
    device: str = "auto"
    pretrain_datasets: list[SceneEntry] = field(default_factory=default_scenes)
    tokenizer_ckpt: str = "checkpoints/tokenizer/best.pth"
    bert_model_name_or_path: str = "bert-base-uncased"
    load_pretrained_lm: bool = False
    bert_config: dict[str, Any] = field(default_factory=dict)
    num_domains: int = 1
    mask_ratio: float = 0.35
    mask_strategy: str = "structured"
    spectral_mask_share: float = 0.25
    spectral_input: bool = True
    blind_spot_share: float = 0.5
    max_block: int = 4
    spectrum_weight: float = 1.0
    max_seq_len: int = 256
    pretrain_batch_size: int = 32
    pretrain_epochs: int = 30
    steps_per_epoch: int | None = None
    learning_rate_pretrain: float = 1e-4
    weight_decay: float = 0.01
    num_warmup_steps: int = 2000
    max_grad_norm: float = 1.0
    val_fraction: float = 0.1
    amp: bool = True
    cpu_threads: int = 0
    output_dir: str = "checkpoints/encoder"

    def validate(self) -> None:
        check_scene_entries(self.pretrain_datasets)
        max_domain = max(entry.domain_id for entry in self.pretrain_datasets)
        check(self.num_domains > max_domain,
              f"num_domains {self.num_domains} must exceed the largest pretrain_datasets domain_id ({max_domain})")
        check(bool(self.tokenizer_ckpt.strip()), "tokenizer_ckpt must not be empty")
        check(bool(self.bert_model_name_or_path.strip()) or not self.load_pretrained_lm,
              "bert_model_name_or_path must name a BERT model when load_pretrained_lm is true")
        allowed = DROPOUT_KEYS if self.load_pretrained_lm else ARCH_KEYS
        unknown = sorted(set(self.bert_config) - set(allowed))
        check(not unknown, f"bert_config: keys {unknown} are not allowed "
                           f"{'with load_pretrained_lm: true ' if self.load_pretrained_lm else ''}(use {list(allowed)})")
        hidden, heads = self.bert_config.get("hidden_size"), self.bert_config.get("num_attention_heads")
        if hidden is not None and heads is not None:
            check(int(heads) >= 1 and int(hidden) % int(heads) == 0,
                  f"bert_config: hidden_size {hidden} must be a multiple of num_attention_heads {heads}")
        check(0.0 < self.mask_ratio < 1.0, f"mask_ratio must lie strictly between 0 and 1, got {self.mask_ratio}")
        check(self.mask_strategy in STRATEGIES, f"mask_strategy must be one of {STRATEGIES}, got {self.mask_strategy!r}")
        check(0.0 <= self.spectral_mask_share <= 1.0,
              f"spectral_mask_share must lie in [0, 1], got {self.spectral_mask_share}")
        check(0.0 <= self.blind_spot_share <= 1.0, f"blind_spot_share must lie in [0, 1], got {self.blind_spot_share}")
        check(self.max_block >= 1, f"max_block must be >= 1, got {self.max_block}")
        check(self.spectrum_weight >= 0.0, f"spectrum_weight must be >= 0, got {self.spectrum_weight}")
        check(self.max_seq_len >= 1, f"max_seq_len must be >= 1, got {self.max_seq_len}")
        check(self.pretrain_batch_size >= 1, f"pretrain_batch_size must be >= 1, got {self.pretrain_batch_size}")
        check(self.pretrain_epochs >= 1, f"pretrain_epochs must be >= 1, got {self.pretrain_epochs}")
        check(self.steps_per_epoch is None or self.steps_per_epoch >= 1,
              f"steps_per_epoch must be >= 1 or null (one pass over the training grids), got {self.steps_per_epoch}")
        check(self.learning_rate_pretrain > 0.0,
              f"learning_rate_pretrain must be > 0, got {self.learning_rate_pretrain}")
        check(self.weight_decay >= 0.0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.num_warmup_steps >= 0, f"num_warmup_steps must be >= 0, got {self.num_warmup_steps}")
        check(self.max_grad_norm > 0.0, f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        check(0.0 < self.val_fraction < 0.5, f"val_fraction must lie in (0, 0.5), got {self.val_fraction}")
        check(self.cpu_threads >= 0, f"cpu_threads must be >= 0 (0 = torch's default), got {self.cpu_threads}")
        check(bool(self.output_dir.strip()), "output_dir must not be empty")
