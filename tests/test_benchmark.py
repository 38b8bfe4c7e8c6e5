"""benchmarks/run_benchmark.py in --quick mode on two tiny scenes; benchmarks/scale_case.py at a small size."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.run_benchmark import QUICK_LINE, ROW_KEYS, build_parser, run
from benchmarks.scale_case import build_parser as scale_parser
from benchmarks.scale_case import run as run_scale
from benchmarks.speed_case import build_parser as speed_parser
from benchmarks.speed_case import run as run_speed
from utils.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent


def _write_scenes(folder: Path, unlabelled: bool = False) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        cube = (rng.normal(size=(14, 16, 10)) @ rng.normal(size=(10, 10)) + 50).astype(np.float32)
        gt = np.zeros((14, 16), dtype=np.uint8)
        for r, c in [(4, 5), (9, 11)]:
            cube[r, c] += 8 * rng.normal(size=10).astype(np.float32)
            gt[r, c] = 1
        np.savez(folder / f"scene{i}.npz", cube=cube, gt=gt)
    if unlabelled:
        np.savez(folder / "nolabel.npz", cube=rng.normal(size=(14, 16, 10)).astype(np.float32))


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_quick_run_writes_valid_json_md_and_figures(tmp_path):
    _write_scenes(tmp_path / "had", unlabelled=True)
    out = tmp_path / "results"
    result = run(_args("--scenes", str(tmp_path / "had"), "--out", str(out), "--quick",
                       "--methods", "grx,lrx", "--seeds", "2", "--mode", "leave-one-out"))
    data = json.loads((out / "benchmark.json").read_text())
    assert data == json.loads(json.dumps(result))
    rows = data["rows"]
    assert len(rows) == 4  # 2 scored scenes x 2 deterministic methods (nolabel.npz is not scored)
    for row in rows:
        assert tuple(row) == ROW_KEYS
        assert row["mode"] == "leave-one-out" and row["seed"] is None
        assert 0.0 <= row["auc"] <= 1.0 and row["seconds"] >= 0
    assert {(r["scene"], r["method"]) for r in rows} == {(s, m) for s in ("scene0", "scene1") for m in ("grx", "lrx")}
    grx = [r for r in rows if r["method"] == "grx"]
    assert min(r["auc"] for r in grx) > 0.9  # the implanted pixels stand out
    assert data["speed"]["pixels_per_second"]["grx"] > 0 and data["speed"]["peak_rss_mb"] > 0
    md = (out / "benchmark.md").read_text()
    assert md.index("## Protocol") < md.index("| scene | grx | lrx |")
    assert "leave-one-out" in md and "nolabel" in md and "QUICK" in md
    table = [line for line in md.splitlines() if line.startswith("| scene") or line.startswith("| **mean")
             or line.startswith("| scene0") or line.startswith("| scene1")]
    assert len(table) == 4
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["scene0.png", "scene1.png"]


def test_ours_quick_runs_all_stages_and_reports_heads(tmp_path):
    _write_scenes(tmp_path / "had")
    result = run(_args("--scenes", str(tmp_path / "had"), "--out", str(tmp_path / "o"), "--quick",
                       "--methods", "ours,grx", "--seeds", "1"))
    methods = {r["method"] for r in result["rows"]}
    assert {"ours", "grx"} <= methods and any(m.startswith("ours/") for m in methods)
    assert all(0.0 <= r["auc"] <= 1.0 for r in result["rows"])
    assert result["speed"]["ours_over_grx_throughput"] > 0
    assert len(result["speed"]["stage_seconds"]["pretrain_stages_1_2"]) == 1  # cached across scenes
    assert "ours/" in (tmp_path / "o" / "benchmark.md").read_text()
    # the scale case runs our inference too, from the detector this run trained
    detector = next((tmp_path / "o" / "work" / "stage3").glob("*/scene0/detector/anomaly_detector.pth"))
    scale = run_scale(scale_parser().parse_args(["--size", "24", "--bands", "8", "--detector_ckpt", str(detector)]))
    assert scale["ours"]["peak_rss_mb"] > 0 and scale["ours"]["pixels_per_second"] > 0
    speed = run_speed(speed_parser().parse_args(["--detector_ckpt", str(detector), "--scene",
                                                 str(tmp_path / "had" / "scene0.npz"), "--repeats", "1"]))
    parts = speed["ours_parts_seconds"]
    assert speed["ours_over_global_rx"] > 0 and parts["- encoder passes"] > 0
    window_tokens = parts["- window tokens (stripes prepared; codes only with context_ids)"]
    assert window_tokens > 0 and parts["- spectral codes"] == 0  # context_ids false: no window is tokenised
    assert parts["context heads (blind-spot windows), all included"] >= parts["- encoder passes"] + window_tokens
    # a second run into the same folder reuses the finished Stages 1-2 and scores the same map
    again = run(_args("--scenes", str(tmp_path / "had"), "--out", str(tmp_path / "o"), "--quick",
                      "--methods", "ours", "--seeds", "1", "--only", "scene0"))
    assert again["speed"]["stage_seconds"]["pretrain_stages_1_2"] == []
    first = {r["method"]: r["auc"] for r in result["rows"] if r["scene"] == "scene0"}
    assert {r["method"]: r["auc"] for r in again["rows"]} == {m: a for m, a in first.items() if m.startswith("ours")}


def test_unfinished_pretraining_is_not_reused(tmp_path):
    from benchmarks.ours import OursPipeline
    _write_scenes(tmp_path / "had")
    train = {f"scene{i}": str(tmp_path / "had" / f"scene{i}.npz") for i in range(2)}
    pipeline = OursPipeline(tmp_path / "work", quick=True)
    folder = pipeline.pretrain(train, 0).encoder_ckpt.parent
    assert len(pipeline.pretrain_seconds) == 1
    (folder / "last.pth").unlink()  # as if killed before the first epoch ended
    fresh = OursPipeline(tmp_path / "work", quick=True)
    fresh.pretrain(train, 0)
    assert len(fresh.pretrain_seconds) == 1  # trained again, not taken from the unfinished folder
    reused = OursPipeline(tmp_path / "work", quick=True)
    reused.pretrain(train, 0)
    assert reused.pretrain_seconds == []


@pytest.mark.parametrize("argv, error, message", [
    (["--methods", "grx,foo"], ConfigError, "foo"),
    (["--seeds", "0"], ConfigError, "seeds"),
    (["--first_seed", "-1"], ConfigError, "first_seed"),
])
def test_bad_options(tmp_path, argv, error, message):
    _write_scenes(tmp_path / "had")
    with pytest.raises(error, match=message):
        run(_args("--scenes", str(tmp_path / "had"), "--out", str(tmp_path / "o"), "--quick", *argv))


def test_folder_without_labelled_scenes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no scene file"):
        run(_args("--scenes", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quick"))


def test_command_line_error_is_one_line(tmp_path):
    _write_scenes(tmp_path / "had")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_benchmark.py"), "--scenes",
                           str(tmp_path / "had"), "--out", str(tmp_path / "o"), "--methods", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert errors == [proc.stderr.strip().splitlines()[-1]] and errors[0].startswith("error: --methods")


def test_scale_case_small(tmp_path):
    result = run_scale(scale_parser().parse_args(["--size", "32", "--bands", "8", "--out", str(tmp_path / "s.json")]))
    assert result["shape"] == [32, 32, 8] and result["global_rx"]["finite"]
    assert result["global_rx"]["peak_rss_mb"] > 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(result))


def test_only_and_merge_give_the_same_rows_as_one_run(tmp_path):
    from benchmarks.merge_results import build_parser as merge_parser
    from benchmarks.merge_results import main as merge_main
    _write_scenes(tmp_path / "had")
    common = ["--scenes", str(tmp_path / "had"), "--quick", "--methods", "grx"]
    whole = run(_args(*common, "--out", str(tmp_path / "all")))
    run(_args(*common, "--out", str(tmp_path / "p0"), "--only", "scene0"))
    run(_args(*common, "--out", str(tmp_path / "p1"), "--only", "scene1"))
    merge_main(merge_parser().parse_args([str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "m")]))
    merged = json.loads((tmp_path / "m" / "benchmark.json").read_text())
    strip = lambda rows: sorted((r["scene"], r["method"], round(r["auc"], 6)) for r in rows)  # noqa: E731
    assert strip(merged["rows"]) == strip(whole["rows"])
    assert "| scene0 |" in (tmp_path / "m" / "benchmark.md").read_text()
    assert "Scenes scored (2): scene0, scene1." in merged["protocol"]
    with pytest.raises(ConfigError, match="--only"):
        run(_args(*common, "--out", str(tmp_path / "x"), "--only", "nope"))
    run(_args(*common, "--out", str(tmp_path / "l1"), "--only", "scene1", "--mode", "leave-one-out"))
    run(_args(*common, "--out", str(tmp_path / "s1"), "--methods", "ours", "--seeds", "1", "--first_seed", "1"))
    assert {r["seed"] for r in json.loads((tmp_path / "s1" / "benchmark.json").read_text())["rows"]} == {1}
    with pytest.raises(DataError, match="different modes"):
        merge_main(merge_parser().parse_args([str(tmp_path / "p0"), str(tmp_path / "l1"), "--out", str(tmp_path / "m3")]))
    with pytest.raises(DataError, match="disjoint"):
        merge_main(merge_parser().parse_args([str(tmp_path / "p0"), str(tmp_path / "p0"), "--out", str(tmp_path / "m2")]))
    merge_main(merge_parser().parse_args([str(tmp_path / "p0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m4")]))
    protocol = json.loads((tmp_path / "m4" / "benchmark.json").read_text())["protocol"]
    assert "- Seeds: 1 for seeded methods (1;" in protocol and "`grx`" in protocol and "`ours`" in protocol
    full = json.loads((tmp_path / "p1" / "benchmark.json").read_text())
    full["protocol"] = full["protocol"].replace(QUICK_LINE, "")  # as if run without --quick
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "benchmark.json").write_text(json.dumps(full))
    with pytest.raises(DataError, match="--quick"):
        merge_main(merge_parser().parse_args([str(tmp_path / "p0"), str(tmp_path / "full"), "--out", str(tmp_path / "m5")]))


def test_leave_one_out_never_pretrains_on_the_scored_scene(tmp_path, monkeypatch):
    from benchmarks.ours import OursPipeline
    seen = []
    real = OursPipeline.pretrain

    def recording(self, train, seed):
        seen.append(set(train))
        return real(self, train, seed)

    monkeypatch.setattr(OursPipeline, "pretrain", recording)
    _write_scenes(tmp_path / "had")
    result = run(_args("--scenes", str(tmp_path / "had"), "--out", str(tmp_path / "o"), "--quick",
                       "--methods", "ours", "--seeds", "1", "--mode", "leave-one-out"))
    assert seen == [{"scene1"}, {"scene0"}]  # scene0 scored first, pre-trained without itself
    assert {r["scene"] for r in result["rows"]} == {"scene0", "scene1"}
