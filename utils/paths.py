"""How a path is written into a run's records (metrics.json): one convention for every path.

    shown_path("checkpoints/anomaly/det.pth")   # 'checkpoints/anomaly/det.pth' (under the current directory)
    shown_path("/data/scenes/a.npz")             # '/data/scenes/a.npz' (elsewhere: absolute)
"""

from __future__ import annotations

import os
from pathlib import Path


def shown_path(path: str | Path) -> str:
    """`path` relative to the current directory when it lies under it, else absolute (normalised, links
    not followed). A pseudo-path such as 'synthetic:3' has no directory part and comes back as given."""
    absolute = Path(os.path.abspath(path))
    cwd = Path.cwd()
    if absolute == cwd or cwd in absolute.parents:
        return str(absolute.relative_to(cwd))
    return str(absolute)
