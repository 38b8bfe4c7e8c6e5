"""peft LoRA adapters in the encoder's BERT attention projections: Stage 3's route to adapt the frozen encoder."""

from __future__ import annotations

from torch import nn

from anomaly.config import LoraSettings
from utils.errors import ConfigError

ADAPTER_KEY = "lora_"  # what peft's adapter parameters have in their names


def inject_lora(encoder: nn.Module, settings: LoraSettings) -> None:
    """Add trainable LoRA adapters (`settings`: r, alpha, target_modules) to `encoder` in place; no dropout: the scene
    fit runs the encoder in eval mode, as scoring does."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=0.0,
                        target_modules=list(settings.target_modules))
    try:
        inject_adapter_in_model(config, encoder)
    except ValueError as err:
        raise ConfigError(f"lora.target_modules {config.target_modules}: {str(err).splitlines()[0]} "
                          f"(BERT attention modules are named query, key, value)") from None


def adapter_parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if ADAPTER_KEY in n)
