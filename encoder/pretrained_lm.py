"""Reading a pretrained BERT body from a local directory or the Hugging Face hub (DESIGN 8).

Only the transformer body is reused: our vocabulary (joint SSPQ ids) and positions are new, so the
word, position and token-type embedding tables of the pretrained model are never loaded.

Offline behaviour: a local directory is read with `local_files_only=True`; a hub name is looked up in
the local HF cache first, and only downloaded when the hub answers a 3-second request about that model
(huggingface_hub itself would retry for tens of seconds), so with no network the load fails within
seconds with a CheckpointError that says so.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel

from encoder.config import ARCH_KEYS, DROPOUT_KEYS  # what `bert_config` may set (with a pretrained body: the dropouts)
from utils.errors import CheckpointError, ConfigError

# Body parameters that are never taken from a pretrained model (new vocabulary; positions counted once).
NOT_LOADED = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
              "embeddings.token_type_embeddings.weight")
PROBE_TIMEOUT_S = 3.0


def _hub_probe(name: str) -> str | None:
    """None when the hub serves model `name`; else why not (one request, PROBE_TIMEOUT_S)."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen(f"{hub.ENDPOINT}/api/models/{name}", timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError as err:
        return f"the hub answers HTTP {err.code} for this model (no such public model?)"
    except (OSError, ValueError) as err:  # URLError, timeouts, refused or intercepted connections
        return f"the hub {hub.ENDPOINT} cannot be reached (no network?): {err}"
    return None


def _from_pretrained(name_or_path: str) -> BertModel:
    """BertModel from a local directory, the local HF cache, or the hub."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        try:
            return BertModel.from_pretrained(str(local), local_files_only=True)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"bert_model_name_or_path: {local} is a directory but holds no readable BERT "
                                  f"model (config.json + weights): {str(err).splitlines()[0][:200]}") from None
    if local.exists() or name_or_path.startswith((".", "/", "~")):
        raise ConfigError(f"bert_model_name_or_path: {name_or_path} is not a directory of a saved BERT model "
                          f"(config.json + model.safetensors)")
    try:
        return BertModel.from_pretrained(name_or_path, local_files_only=True)
    except (OSError, ValueError):
        pass  # not in the local cache: download below if the hub can be reached
    problem = _hub_probe(name_or_path)
    if problem is not None:
        raise CheckpointError(
            f"bert_model_name_or_path: '{name_or_path}' is not a local directory nor in the local Hugging Face "
            f"cache, and {problem}: pass a local directory holding config.json + model.safetensors, or set "
            f"load_pretrained_lm: false")
    try:
        return BertModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"bert_model_name_or_path: cannot load '{name_or_path}' from the hub: "
                              f"{str(err).splitlines()[0][:200]}") from None


def load_pretrained_body(name_or_path: str, overrides: dict[str, Any] | None = None
                         ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(architecture dict over ARCH_KEYS, body state_dict without the NOT_LOADED tables and the pooler).

    `overrides` may only change dropout probabilities: other fields would not fit the pretrained weights.
    """
    overrides = dict(overrides or {})
    fixed = sorted(set(overrides) - set(DROPOUT_KEYS))
    if fixed:
        raise ConfigError(f"bert_config: {fixed} cannot be changed when load_pretrained_lm is true (the "
                          f"architecture comes from {name_or_path}); only {list(DROPOUT_KEYS)} can")
    body = _from_pretrained(os.fspath(name_or_path))
    if body.config.model_type != "bert":
        raise CheckpointError(f"bert_model_name_or_path: {name_or_path} is a '{body.config.model_type}' "
                              f"model; a BERT model is expected")
    arch = {key: getattr(body.config, key) for key in ARCH_KEYS}
    arch.update(overrides)
    state = {k: v for k, v in body.state_dict().items()
             if k not in NOT_LOADED and not k.startswith("pooler.")}  # BertForMaskedLM has no pooler
    return arch, state


def default_arch(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Architecture dict over ARCH_KEYS: BertConfig's defaults (bert-base sizes) updated by `overrides`."""
    base = BertConfig()
    arch = {key: getattr(base, key) for key in ARCH_KEYS}
    unknown = sorted(set(overrides or {}) - set(ARCH_KEYS))
    if unknown:
        raise ConfigError(f"bert_config: unknown keys {unknown}; valid keys are {list(ARCH_KEYS)}")
    arch.update(overrides or {})
    return arch
