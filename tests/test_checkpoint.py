"""utils/checkpoint.py: atomic writes, stage checks, truncated files, parent hashes."""

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from utils.checkpoint import (check_parent, load_checkpoint, parent_record, save_checkpoint,
                              sha256_file)
from utils.errors import CheckpointError


def test_round_trip_and_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", "tokenizer", {"K_s": 8}, {"w": torch.ones(3)}, step=5,
                           metrics={"val": 0.5})
    ckpt = load_checkpoint(path, "tokenizer")
    assert ckpt["config"] == {"K_s": 8} and ckpt["step"] == 5 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))


def test_wrong_stage_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "tok.pth", "tokenizer", {}, {})
    with pytest.raises(CheckpointError, match="this is a tokenizer checkpoint, but an encoder checkpoint is expected"):
        load_checkpoint(path, "encoder")


def test_truncated_and_missing(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", "encoder", {}, {"w": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, "encoder")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth", "encoder")


def test_parent_hash_mismatch_names_both_files(tmp_path):
    parent = save_checkpoint(tmp_path / "tok.pth", "tokenizer", {}, {"w": torch.zeros(2)})
    child = {"parent": parent_record(parent)}
    check_parent(child, "enc.pth", parent)
    save_checkpoint(parent, "tokenizer", {}, {"w": torch.ones(2)})
    with pytest.raises(CheckpointError, match=r"enc.pth was built from .*tok.pth"):
        check_parent(child, "enc.pth", parent)


def _slow_writer(path):
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"x" * 1000)
            handle.flush()
            time.sleep(30)
    from utils.atomic import atomic_write
    atomic_write(path, write, 1000)


def test_killed_writer_leaves_previous_file_intact(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", "anomaly", {"v": 1}, {})
    before = sha256_file(path)
    proc = mp.get_context("spawn").Process(target=_slow_writer, args=(path,))
    proc.start()
    deadline = time.time() + 20
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "writer never started"
    proc.kill()
    proc.join()
    assert sha256_file(path) == before
    assert load_checkpoint(path, "anomaly")["config"] == {"v": 1}
    assert os.path.exists(path)


def test_parent_is_found_after_the_folder_moves_and_from_another_cwd(tmp_path, monkeypatch):
    from utils.checkpoint import locate_parent
    run = tmp_path / "run"
    save_checkpoint(run / "tok" / "best.pth", "tokenizer", {}, {"w": torch.zeros(1)})
    monkeypatch.chdir(tmp_path)  # a relative parent path, as a stage script is given one
    child = save_checkpoint(run / "enc" / "best.pth", "encoder", {}, {"w": torch.zeros(1)},
                            parent=parent_record("run/tok/best.pth"))
    ckpt = load_checkpoint(child, "encoder")
    assert Path(ckpt["parent"]["path"]).is_absolute() and ckpt["parent"]["relative"] == "../tok/best.pth"
    monkeypatch.chdir(run)  # another working directory: the absolute path still holds
    assert locate_parent(ckpt, child, "tokenizer") == run / "tok" / "best.pth"
    moved = tmp_path / "moved"
    run.rename(moved)  # the whole run moved: the path relative to the child takes over
    found = locate_parent(load_checkpoint(moved / "enc" / "best.pth", "encoder"), moved / "enc" / "best.pth", "tokenizer")
    assert found == moved / "enc" / ".." / "tok" / "best.pth" and found.is_file()
    (moved / "tok" / "best.pth").unlink()
    with pytest.raises(CheckpointError, match="built from the tokenizer .* which is missing"):
        locate_parent(ckpt, moved / "enc" / "best.pth", "tokenizer")


def test_a_detector_config_with_retired_lora_settings_still_loads():
    """Detectors written before the scene fit stored lora.dropout and lora.mlm_weight; they still score."""
    from anomaly.checkpoint import trained_config
    from anomaly.config import AnomalyConfig
    from utils.config import to_dict

    stored = to_dict(AnomalyConfig())
    stored["lora"] = {**stored["lora"], "dropout": 0.05, "mlm_weight": 1.0}
    cfg = trained_config({"config": {"anomaly": stored}}, "old.pth")
    assert cfg.lora.r == AnomalyConfig().lora.r
