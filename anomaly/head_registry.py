"""The heads of the detector, one record each: every head list of the project is derived from `HEADS`.

Kinds: "context" heads score each pixel while it is hidden in a blind spot (anomaly/blind_spot.py), "patch" heads
score tokenizer patches (anomaly/heads.py), "scene" heads score the prepared cube as a whole (anomaly/baselines.py).
The default fusion weights were chosen on the cross-scene protocol (docs/experiments.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Head:
    name: str
    kind: str  # "context", "patch" or "scene"
    title: str  # shown on figures
    weight: float  # default fusion weight; 0 = not computed
    help: str  # what it scores; why its default weight
    needs_spectra: bool = False  # predicts spectra: needs an encoder pre-trained with spectral_input
    residual: bool = False  # computed from the context residuals once their statistics are fitted


HEADS = {head.name: head for head in (
    Head("lm_nll", "context", "masked-LM NLL", 0.0,
         "-log p(joint id | context) of the hidden pixel's token; off: it inverts on scenes the encoder never saw"),
    Head("lm_spectral", "context", "spectral-code NLL", 0.0,
         "-log p(spectral code | context), the joint distribution's spectral marginal; off: weak on unseen scenes"),
    Head("ctx_spec", "context", "context spectrum error", 1.0,
         "error of the spectrum predicted from the blind-spot context; on: the main learned head", needs_spectra=True),
    Head("ctx_rx", "context", "context residual RX", 1.0,
         "Mahalanobis distance of that context residual under the scene's residual statistics; on",
         needs_spectra=True, residual=True),
    Head("ctx_lrx", "context", "context residual local RX", 0.0,
         "dual-window local RX (local_rx's windows) on the context residuals; off: with the extent and line discounts "
         "the fusion is better without it", needs_spectra=True, residual=True),
    Head("recon", "patch", "reconstruction error", 0.0,
         "squared error of the decode from the quantised codes; off: near chance"),
    Head("one_class", "patch", "one-class (Deep SVDD)", 0.0,
         "Deep SVDD distance of each token's embedding, trained in Stage 3; off: it lowered the fusion"),
    Head("rarity", "patch", "code rarity", 0.0,
         "-log frequency of the pixel's spectral code in the scene; off: below chance"),
    Head("grx", "scene", "global RX", 1.0,
         "RX on the prepared cube's leading principal components; on: a strong label-free anchor of the fusion"),
    Head("lrx", "scene", "local RX", 0.5,
         "dual-window local RX on the prepared cube's leading principal components; half weight: the global heads "
         "carry the fusion and the extent discounts tame their false alarms"),
)}
HEAD_NAMES = tuple(HEADS)
CONTEXT_HEADS = tuple(name for name, head in HEADS.items() if head.kind == "context")
PATCH_HEADS = tuple(name for name, head in HEADS.items() if head.kind == "patch")
SCENE_HEADS = tuple(name for name, head in HEADS.items() if head.kind == "scene")
RESIDUAL_HEADS = tuple(name for name, head in HEADS.items() if head.residual)
LEARNED_HEADS = CONTEXT_HEADS + PATCH_HEADS  # what the benchmark's `ours/learned` fuses: all but the RX baselines


def ordered(names: Iterable[str]) -> list[str]:
    """`names` in the registry's order (unknown names dropped)."""
    wanted = set(names)
    return [name for name in HEAD_NAMES if name in wanted]
