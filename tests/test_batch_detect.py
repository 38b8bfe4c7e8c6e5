"""`sspq-hsi detect` on a folder of tiny scenes: one corrupt scene fails alone, a re-run skips the done scenes and
redoes a half-done one, and the same run goes through local worker processes and a real two-worker Dask cluster;
the model cache behind "each worker loads the models once", and benchmarks/batch_case.py.

Tiny untrained tokenizer and encoder (tests/test_inference.py's make_stage3_ckpts); 16 x 16 x 12 synthetic scenes.
Everything is written under tmp_path.
"""

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anomaly.run_folders import OUTPUT_FILES
from benchmarks.batch_case import run as run_case
from benchmarks.cli_args import batch_parser
from data.synthetic import make_synthetic_scene
from sspq_hsi import scene_task
from sspq_hsi.engines import local_pool
from sspq_hsi.main import main
from sspq_hsi.scene_task import SceneTask
from tests.test_inference import make_stage3_ckpts
from utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
LIGHT = ["anomaly_epochs=1", "local_rx.inner=3", "local_rx.outer=5", "device=cpu"]  # default heads: nothing trains


def write_scenes(folder: Path, count: int, corrupt: bool = True) -> Path:
    folder.mkdir(parents=True)
    for seed in range(count):
        scene = make_synthetic_scene(16, 16, 12, seed=seed, anomaly_fraction=0.03)  # (16, 16, 12), a gt mask
        np.savez(folder / f"s{seed}.npz", cube=scene.cube, gt=scene.gt)
    if corrupt:
        (folder / "bad.npz").write_bytes(b"not a zip file")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(encoder checkpoint, a folder of s0.npz, s1.npz and the corrupt bad.npz)."""
    root = tmp_path_factory.mktemp("batch")
    return make_stage3_ckpts(root / "ckpts") / "enc.pth", write_scenes(root / "scenes", 2)


def test_the_model_cache_reads_a_file_once_and_hands_each_scene_a_copy(setup, monkeypatch):
    import torch

    from anomaly import model_cache

    encoder, _ = setup
    reads = []
    real = model_cache.load_universal_model
    monkeypatch.setattr(model_cache, "load_universal_model", lambda *a: reads.append(a) or real(*a))
    cache = model_cache.ModelCache()
    first, info = cache.load(encoder, torch.device("cpu"))
    first.encoder.domain_embedding.weight.data.zero_()  # as a scene fit would change its copy
    second, _ = cache.load(encoder, torch.device("cpu"))
    assert len(reads) == 1 and second.encoder.domain_embedding.weight.abs().sum() > 0
    assert info["encoder"]["sha256"] and info == cache.load(encoder, torch.device("cpu"))[1]
    os.utime(encoder, ns=(encoder.stat().st_atime_ns, encoder.stat().st_mtime_ns + 1))  # the file replaced
    cache.load(encoder, torch.device("cpu"))
    assert len(reads) == 2


def detect_args(encoder: Path, out: Path, *scenes, extra=()) -> list[str]:
    return ["detect", *map(str, scenes), "--encoder_ckpt", str(encoder), "--out_dir", str(out), *extra,
            *[x for s in LIGHT for x in ("--set", s)]]


def summary(out: Path) -> dict[str, dict[str, str]]:
    lines = (out / "summary.csv").read_text().splitlines()
    assert lines[0] == "scene,status,seconds,roc_auc,out_dir,error"
    rows = [dict(zip(lines[0].split(","), line.split(",", 5))) for line in lines[1:]]
    return {row["scene"]: row for row in rows}


def assert_two_scored_one_failed(out: Path) -> None:
    rows = summary(out)
    assert {name: row["status"] for name, row in rows.items()} == {"bad": "failed", "s0": "ok", "s1": "ok"}
    assert "bad.npz: not a readable .npz file" in rows["bad"]["error"]
    for name in ("s0", "s1"):
        assert 0 <= float(rows[name]["roc_auc"]) <= 1 and float(rows[name]["seconds"]) > 0
        assert sorted(p.name for p in (out / name).iterdir()) == sorted([*OUTPUT_FILES, "batch.json", "detector"])
        assert (out / name / "detector" / "anomaly_detector.pth").is_file()
        assert json.loads((out / name / "batch.json").read_text())["status"] == "done"
    assert json.loads((out / "bad" / "batch.json").read_text())["status"] == "started"


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_bad_scene_fails_alone_and_a_rerun_skips_the_done_scenes(setup, tmp_path, capsys):
    encoder, scenes = setup
    out = tmp_path / "out"
    scene_task._models.cache_clear()  # a fresh process's cache: it must load the models once for both scenes
    assert main(detect_args(encoder, out, scenes)) == 1
    assert_two_scored_one_failed(out)
    err = capsys.readouterr().err
    assert err.count(" and its tokenizer (process ") == 1
    assert err.strip().splitlines()[-1].startswith("error: 1 of 3 scene(s) failed (bad)")

    done = {name: mtimes(out / name) for name in ("s0", "s1")}
    assert main(detect_args(encoder, out, scenes)) == 1  # bad.npz fails again
    assert "2 done by an earlier run (skipped), 1 to score" in capsys.readouterr().err
    assert {name: row["status"] for name, row in summary(out).items()} == {"bad": "failed", "s0": "skipped",
                                                                          "s1": "skipped"}
    assert {name: mtimes(out / name) for name in ("s0", "s1")} == done  # not one file of theirs rewritten


def test_a_half_done_scene_is_redone_and_another_runs_files_are_kept(setup, tmp_path):
    encoder, scenes = setup
    out = tmp_path / "out"
    assert main(detect_args(encoder, out, scenes / "s0.npz", scenes / "s1.npz")) == 0
    marker = out / "s0" / "batch.json"  # s0 cut short after its maps: started, no metrics.json yet
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "status": "started"}))
    (out / "s0" / "metrics.json").unlink()
    (out / "s1" / "batch.json").unlink()  # s1's files now look like another run's (main_anomaly.py's)
    assert main(detect_args(encoder, out, scenes / "s0.npz", scenes / "s1.npz")) == 1
    rows = summary(out)
    assert rows["s0"]["status"] == "ok" and (out / "s0" / "metrics.json").is_file()
    assert rows["s1"]["status"] == "failed" and "already holds an earlier run's" in rows["s1"]["error"]
    assert main(detect_args(encoder, out, scenes / "s1.npz", extra=["--overwrite"])) == 0
    assert summary(out)["s1"]["status"] == "ok"


@pytest.mark.parametrize("extra, message", [
    (["--set", "data_path=x.npz"], r"--set data_path: detect sets these for each scene"),
    (["--workers", "0"], r"--workers 0: must be at least 1"),
    (["--set", "supervised=true", "--set", "supervised_data_path=x.npz", "--set", "head_weights.one_class=1"],
     "runs unsupervised only"),
])
def test_what_detect_cannot_do_is_refused_before_any_scene(setup, tmp_path, capsys, extra, message):
    encoder, scenes = setup
    with pytest.raises(SystemExit) as exit_info:
        main(detect_args(encoder, tmp_path / "out", scenes, extra=extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_local_workers_from_the_command_line(setup, tmp_path):
    encoder, scenes = setup
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "sspq_hsi", *detect_args(encoder, out, scenes, extra=["--workers", "2"])],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    assert_two_scored_one_failed(out)
    assert "to score in 2 worker processes" in run.stderr
    loads = [line for line in run.stderr.splitlines() if " and its tokenizer (process " in line]
    assert 1 <= len(loads) <= 2, loads  # once per worker process that got a scene, not once per scene


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced_for_the_scenes_left(setup, tmp_path, capfd):
    """SIGKILL the pool's worker (as the out-of-memory killer would): a scene it had fails, a fresh pool scores
    the rest (one worker, to keep the test cheap; each pool holds at most one scene per worker)."""
    encoder, _ = setup
    scenes = write_scenes(tmp_path / "scenes", 4, corrupt=False)
    tasks = [SceneTask(f"s{i}", str(scenes / f"s{i}.npz"), str(tmp_path / "out" / f"s{i}"), None,
                       (*LIGHT, f"encoder_ckpt={encoder}"), False, False) for i in range(4)]
    results = local_pool(tasks, workers=1)
    first = next(results)
    (worker,) = multiprocessing.active_children()
    os.kill(worker.pid, signal.SIGKILL)
    rest = list(results)
    assert [r.scene for r in [first, *rest]] == ["s0", "s1", "s2", "s3"] and first.status == "ok"
    lost = [r for r in rest if r.status != "ok"]
    assert len(lost) <= 1 and all("a worker process died" in r.error for r in lost), lost
    loaders = set(re.findall(r"and its tokenizer \(process (\d+) keeps", capfd.readouterr().err))
    assert len(loaders) == 2, loaders  # the first pool's worker, then the fresh pool's


@pytest.mark.slow
def test_a_real_two_worker_dask_cluster(setup, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    encoder, scenes = setup
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        assert main(detect_args(encoder, out, scenes, extra=["--cluster", cluster.scheduler_address])) == 1
    assert_two_scored_one_failed(out)
    assert f"in the Dask cluster at {cluster.scheduler_address}" in capsys.readouterr().err


@pytest.mark.slow
def test_the_batch_case_times_a_mode_and_refuses_an_unknown_one(setup, tmp_path):
    encoder, scenes = setup
    args = ["--scenes", str(scenes), "--encoder_ckpt", str(encoder), *[x for s in LIGHT for x in ("--set", s)]]
    with pytest.raises(ConfigError, match="--modes: unknown 3; the modes are loop, 1, 2, cluster"):
        run_case(batch_parser().parse_args([*args, "--modes", "1,3"]))
    result = run_case(batch_parser().parse_args([*args, "--modes", "1", "--out", str(tmp_path / "case.json")]))
    assert json.loads((tmp_path / "case.json").read_text()) == result
    mode = result["modes"]["1"]
    assert result["count"] == 3 and mode["scenes_ok"] == 2 and 0 < mode["mean_scene_seconds"] < mode["wall_seconds"]
    assert mode["seconds_per_scene"] == pytest.approx(mode["wall_seconds"] / 3)


def test_a_done_marker_of_another_file_or_other_settings_is_not_skipped(tmp_path):
    folder = tmp_path / "out" / "scene"
    task = SceneTask("scene", str(tmp_path / "day2" / "scene.npz"), str(folder), None, ("encoder_ckpt=/w/enc.pth",),
                     False, False)
    folder.mkdir(parents=True)
    marker = {"status": "done", "scene": "scene", "data_path": task.data_path, "overrides": list(task.overrides),
              "seconds": 2.0, "roc_auc": 0.99}
    (folder / scene_task.MARKER).write_text(json.dumps(marker))
    assert scene_task.finished(task).status == "skipped"
    for changed in ({"data_path": str(tmp_path / "day1" / "scene.npz")}, {"overrides": ["encoder_ckpt=/w/other"]}):
        (folder / scene_task.MARKER).write_text(json.dumps({**marker, **changed}))
        row = scene_task.finished(task)
        assert row.status == "failed" and row.roc_auc is None and "pass --overwrite" in row.error
