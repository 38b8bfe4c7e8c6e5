"""Device, precision and seeding: the only place that decides where tensors live.

Model files never call `torch.cuda.*`; the stage scripts ask this module for a device and an
autocast context. AMP (bf16/fp16 autocast + GradScaler) is used on CUDA only; CPU runs in fp32.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from utils.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda:0 when available, else cpu. An explicit CUDA device that is absent is an error."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device: '{spec}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{spec}' asked for, but no CUDA device is available; use device=cpu or auto")
    return device


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.amp.autocast("cuda", dtype=dtype)


def make_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """GradScaler for fp16 autocast on CUDA; disabled (a pass-through) on CPU and with bf16."""
    use = enabled and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=use)


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on CPU also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """All RNG states as plain tensors / lists (for `weights_only=True` checkpoints)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    gauss = None if py[-1] == -1 else py[-1]
    random.setstate((3, tuple(int(v) for v in py[:-1]), gauss))
    np_s = state["numpy"]
    np.random.set_state(("MT19937", np_s["keys"].cpu().numpy().astype(np.uint32), np_s["pos"],
                         np_s["has_gauss"], np_s["gauss"]))
    torch.set_rng_state(state["torch"].cpu())  # a checkpoint loaded with map_location="cuda" moves them
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
