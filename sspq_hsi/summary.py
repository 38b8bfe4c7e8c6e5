"""`<out_dir>/summary.csv` of `sspq-hsi detect`: one row per scene, in the order the scenes were named.

    summary = BatchSummary(out / "summary.csv", [SceneResult("a", "pending", None, None, "out/a"), ...])
    summary.record(result)          # the scene's row, and the file rewritten at once

Columns: scene, status (ok, skipped = done by an earlier run, failed, pending = not finished), seconds (the
scene's wall time; a skipped scene's from its earlier run), roc_auc (the fused map's, when the scene has a gt
mask), out_dir, error (one line, when failed). The file is rewritten atomically after every scene, so a run cut
short leaves the rows it finished and the rest pending.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from sspq_hsi.scene_task import SceneResult
from utils.atomic import write_files
from utils.paths import shown_path

COLUMNS = ("scene", "status", "seconds", "roc_auc", "out_dir", "error")


class BatchSummary:
    def __init__(self, path: Path, rows: list[SceneResult]) -> None:
        self.path = path
        self.rows = {row.scene: row for row in rows}
        self.write()

    def record(self, result: SceneResult) -> None:
        self.rows[result.scene] = result
        self.write()

    def counts(self) -> Counter[str]:
        return Counter(row.status for row in self.rows.values())

    def text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows.values():
            writer.writerow([row.scene, row.status, "" if row.seconds is None else f"{row.seconds:.2f}",
                             "" if row.roc_auc is None else f"{row.roc_auc:.4f}", shown_path(row.folder), row.error])
        return out.getvalue()

    def write(self) -> None:
        write_files({self.path: self.text()})
