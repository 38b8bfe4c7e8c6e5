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

# The default body: CPU-sized (bert-base is 768 / 12 / 12 / 3072, configs/pretrain_gpu.yaml).
BERT_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
               "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0}


@dataclass
class PretrainConfig:
    seed: int = field(default=66, metadata={"help": "seeds weights, the train/val masks, domain sampling and "
                                                     "dropout"})
    device: str = field(default="auto", metadata={"help": "auto = cuda:0 when present (cuda:LOCAL_RANK under "
                                                           "torchrun), else cpu; or cpu / cuda / cuda:N"})
    pretrain_datasets: list[SceneEntry] = field(
        default_factory=default_scenes,
        metadata={"help": "scenes / sensors to pre-train on (name, data_path, domain_id < num_domains; optional "
                          "cube_key, gt_key, gt_path, cube_layout); labels are never read; default: the embedded "
                          "synthetic scene, so that a fresh checkout runs"})
    tokenizer_ckpt: str = field(default="checkpoints/tokenizer/best.pth",
                                metadata={"help": "Stage 1 checkpoint (--tokenizer_ckpt overrides it); where "
                                                  "train_tokenizer.py writes by default"})
    bert_model_name_or_path: str = field(default="bert-base-uncased",
                                         metadata={"help": "pretrained body (local directory or hub name); read "
                                                           "only with load_pretrained_lm: true"})
    load_pretrained_lm: bool = field(default=False, metadata={"help": "false = BERT built from bert_config, no "
                                                                       "download; true = reuse a pretrained body "
                                                                       "(token/position embeddings and MLM head "
                                                                       "stay new)"})
    bert_config: dict[str, Any] = field(default_factory=lambda: dict(BERT_CONFIG),
                                        metadata={"help": "BertConfig fields of the body (with load_pretrained_lm "
                                                          "only the dropouts); CPU-sized; attention dropout 0 "
                                                          "because it costs a CPU step time"})
    num_domains: int = field(default=1, metadata={"help": "rows of the domain embedding (> every domain_id; spare "
                                                           "rows leave room for new sensors)"})
    mask_ratio: float = field(default=0.35, metadata={"help": "share of each token grid masked per step (the spec's "
                                                               "range is 0.3-0.45)"})
    mask_strategy: str = field(default="structured", metadata={"help": "structured = spatial runs grown to "
                                                                        "neighbours + spectral segments (harder "
                                                                        "than isolated tokens); random"})
    spectral_mask_share: float = field(default=0.25, metadata={"help": "share of the masked tokens taken as whole "
                                                                        "spectral-code groups"})
    spectral_input: bool = field(default=True, metadata={"help": "visible tokens also carry their prepared "
                                                                  "spectrum; masked spectra are predicted (what the "
                                                                  "blind-spot heads score)"})
    blind_spot_share: float = field(default=0.5, metadata={"help": "share of the training rows masked with one "
                                                                    "square block, the family Stage 3 scores with"})
    max_block: int = field(default=4, metadata={"help": "largest side (tokens) of those blocks"})
    spectrum_weight: float = field(default=1.0, metadata={"help": "weight of the predicted-spectrum error (over the "
                                                                   "targets' variance) beside the cross-entropy"})
    max_seq_len: int = field(default=256, metadata={"help": "size of the position table (>= tokens per patch; the "
                                                             "default tokenizer gives 64)"})
    pretrain_batch_size: int = field(default=32, metadata={"help": "token grids per step (per process under "
                                                                    "torchrun; spec 7)"})
    pretrain_epochs: int = field(default=10, metadata={"help": "epochs; validation and checkpoints after each; "
                                                                "CPU-sized (the spec's GPU size is 30)"})
    steps_per_epoch: int | None = field(default=100, metadata={"help": "optimiser steps per epoch (null = one pass "
                                                                        "over the training grids); bounds an "
                                                                        "epoch's time whatever the scenes' size"})
    learning_rate_pretrain: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate; small models "
                                                                           "take a high one (the spec's bert-base "
                                                                           "size is 1e-4)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay on weight matrices (not biases "
                                                                 "/ LayerNorms)"})
    num_warmup_steps: int = field(default=100, metadata={"help": "linear warmup steps, then linear decay to 0 at "
                                                                  "the last step; must be below all steps (one "
                                                                  "epoch here)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient-norm clipping"})
    val_fraction: float = field(default=0.1, metadata={"help": "bottom share of each scene's patch rows held out "
                                                                "for validation"})
    amp: bool = field(default=True, metadata={"help": "mixed precision on CUDA (bf16 where supported, else fp16 + "
                                                       "GradScaler); ignored on the CPU"})
    cpu_threads: int = field(default=1, metadata={"help": "torch CPU threads; 1 runs faster than 2 on a busy "
                                                           "shared 2-core box; 0 = torch's default"})
    output_dir: str = field(default="checkpoints/encoder", metadata={"help": "universal_hsi_encoder.pth (best "
                                                                              "validation NLL) and last.pth (for "
                                                                              "--resume) go here"})

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
