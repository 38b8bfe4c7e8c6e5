"""Which pre-training domain embedding a Stage 3 scene uses (`domain_id` in configs/anomaly.yaml).

    choice = choose_domain("auto", scene.name, lambda: mean_spectrum(scene.cube, prep.transform),
                           info["domains"], info["domain_spectra"], info["num_domains"], encoder_ckpt)
    log.info(choice.describe())          # "domain 4 (abu-urban-1), nearest mean spectrum"
    metrics["domain"] = choice.as_dict()

- An explicit integer `domain_id` wins (it must be one of the encoder's `num_domains`).
- `auto` (the default): the scene's own domain when a pre-training scene has its name; else the domain of
  the pre-training scene whose mean *prepared* spectrum (the encoder checkpoint's `domain_spectra`, written
  by encoder/pretrain_mtp.py) is nearest by cosine to this scene's, prepared with the same tokenizer
  preprocessing. Cosine compares spectral shape, not level: the per-scene normalisation moves the level.
  A label-free choice: no gt is read.
- An encoder checkpoint written before `domain_spectra` existed: auto by name only, else a ConfigError
  that asks for an explicit `domain_id`.

`warn_if_unseen` is inference's one-line warning for a scene that neither pre-training nor the
detector's Stage 3 training saw (matched by name, as `auto` matches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from utils.errors import ConfigError

AUTO = "auto"
EXPLICIT, BY_NAME, NEAREST = "explicit domain_id", "scene name", "nearest mean spectrum"


@dataclass
class DomainChoice:
    """The domain a scene is scored under: its id, the pre-training scene it belongs to (None when the
    encoder names no scene for an explicit id), how it was chosen, and the cosine similarity when by spectrum."""

    domain_id: int
    scene: str | None
    reason: str
    similarity: float | None = None

    def describe(self) -> str:
        return f"domain {self.domain_id} ({self.scene or 'unnamed'}), {self.reason}"

    def as_dict(self) -> dict:
        """Plain types, for metrics.json and checkpoints."""
        return {"domain_id": self.domain_id, "scene": self.scene, "reason": self.reason,
                "similarity": self.similarity}


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    rms = norm / max(1.0, float(np.sqrt(vector.size)))
    if not np.isfinite(norm) or rms < 1e-4:  # zscore: every band's mean is 0 up to rounding (~1e-7)
        raise ConfigError(f"domain_id: auto cannot match by spectrum: the mean prepared spectrum of {what} is "
                          f"zero (per-band zscore normalisation centres every band); set an explicit domain_id")
    return vector / norm


def nearest_domain(spectrum: np.ndarray, domain_spectra: dict[str, list[float]],
                   domains: dict[str, int]) -> tuple[str, float]:
    """(name, cosine) of the pre-training scene whose mean prepared spectrum (B,) is nearest to `spectrum` (B,)."""
    query = _unit(np.asarray(spectrum, dtype=np.float64), "the scored scene")
    best: tuple[str, float] | None = None
    for name, other in domain_spectra.items():
        if name not in domains or other is None:
            continue
        other = np.asarray(other, dtype=np.float64)
        if other.shape != query.shape:
            raise ConfigError(f"domain_id: auto: the encoder's mean spectrum of '{name}' has {other.shape[0]} bands, "
                              f"the scored scene's {query.shape[0]}; set an explicit domain_id")
        cosine = float(query @ _unit(other, f"pre-training scene '{name}'"))
        if best is None or cosine > best[1]:
            best = (name, cosine)
    if best is None:
        raise ConfigError("domain_id: auto: the encoder checkpoint holds no mean spectrum of its pre-training "
                          "scenes; set an explicit domain_id")
    return best


def choose_domain(setting: int | str, scene_name: str, spectrum: Callable[[], np.ndarray],
                  domains: dict[str, int], domain_spectra: dict[str, list[float]] | None,
                  num_domains: int, encoder_ckpt: str = "the encoder checkpoint") -> DomainChoice:
    """Resolve `domain_id` (an int or 'auto') for the scene `scene_name`; see the module docstring.

    `spectrum()` returns the scene's mean prepared spectrum (B,); it is only called when the name does not match.
    `domains`: pre-training scene name -> domain id; `domain_spectra`: name -> (B,) list, or None (old checkpoint).
    """
    names = {domain_id: name for name, domain_id in domains.items()}
    if not isinstance(setting, str):
        domain_id = int(setting)
        if not 0 <= domain_id < num_domains:
            raise ConfigError(f"domain_id: {domain_id}, but the encoder knows {num_domains} domains "
                              f"{domains or ''}; pick the id of the most similar pre-training sensor, or 'auto'")
        return DomainChoice(domain_id, names.get(domain_id), EXPLICIT)
    if setting != AUTO:
        raise ConfigError(f"domain_id: {setting!r}; use an integer id or '{AUTO}'")
    if scene_name in domains:
        return DomainChoice(int(domains[scene_name]), scene_name, BY_NAME)
    if not domain_spectra:
        raise ConfigError(f"domain_id: auto: scene '{scene_name}' is none of the pre-training scenes "
                          f"{sorted(domains)}, and {encoder_ckpt} predates the mean spectra that auto matches "
                          f"(re-run Stage 2 to record them); set an explicit domain_id, one of {domains}")
    name, cosine = nearest_domain(spectrum(), domain_spectra, domains)
    return DomainChoice(int(domains[name]), name, NEAREST, cosine)



def warn_if_unseen(log: logging.Logger, scene_name: str, pretrain_names: Iterable[str],
                   train_scene: str | None) -> None:
    """Warn in one line when `scene_name` is none of the encoder's pre-training scenes (its domain table's
    names) and not the detector's training scene `train_scene`."""
    pretrain_names = sorted(pretrain_names)
    if scene_name in pretrain_names or scene_name == train_scene:
        return
    shown = ", ".join(pretrain_names[:3]) + (", ..." if len(pretrain_names) > 3 else "")
    log.warning(f"scene '{scene_name}' is new to these models: neither a pre-training scene ({len(pretrain_names)}: "
                f"{shown}) nor the detector's training scene ({train_scene}); to train Stage 3 on it, run "
                f"python main_anomaly.py --data_path <this scene>")
