"""A training process killed with SIGKILL resumes with --resume and ends with the same weights, optimizer
and scheduler state as the uninterrupted run (CPU, bitwise); the checkpoint it was writing when killed is
never left half-written.

The uninterrupted runs are the session chain's (tests/robustness_helpers.py); the killed run differs only
in output_dir. Stage 3's epochs are too short to kill between two of them reliably: its run is interrupted
in this process (KeyboardInterrupt in the second epoch's second step, as SIGINT raises it) and compared with
an uninterrupted run in this process too (the same torch thread count).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from anomaly import objective
from robustness_helpers import (PRETRAIN_EPOCHS, TOKENIZER_EPOCHS, Chain, chain, run_in_process, run_script, sets,
                                start_script)
from utils.checkpoint import load_checkpoint


def kill_mid_run(script: str, argv: list, out_dir: Path, log: Path, timeout: float = 120) -> bool:
    """Start a training run, SIGKILL it once its first last.pth exists, preferably while it writes the next
    checkpoint (a temporary file in out_dir). Returns whether the kill landed mid-write."""
    proc, _, err = start_script(script, argv, log)
    deadline = time.time() + timeout
    while not (out_dir / "last.pth").exists():
        assert proc.is_alive(), f"{script} exited before its first checkpoint:\n{err.read_text()[-2000:]}"
        assert time.time() < deadline, f"{script} wrote no last.pth in {timeout} s"
        time.sleep(0.005)
    mid_write, wait_until = False, time.time() + 10.0
    while proc.is_alive() and time.time() < wait_until:
        if any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
            mid_write = True
            break
    proc.kill()
    proc.join()
    assert proc.exitcode == -9, f"{script} finished before it could be killed (exit {proc.exitcode})"
    return mid_write


def assert_same_state(resumed: dict, reference: dict) -> None:
    assert resumed["epoch"] == reference["epoch"]
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    ref_opt, res_opt = reference["optimizer"]["state"], resumed["optimizer"]["state"]
    assert ref_opt.keys() == res_opt.keys()
    for index, state in ref_opt.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(res_opt[index][name]), torch.as_tensor(value)), (index, name)
    assert resumed.get("scheduler") == reference.get("scheduler")


@pytest.fixture(scope="module")
def c() -> Chain:
    return chain()


@pytest.mark.parametrize("stage", ["tokenizer", "encoder"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(stage, c: Chain, tmp_path):
    out_dir = tmp_path / stage
    if stage == "tokenizer":
        script, argv, reference, epochs = ("sspq_tokenizer/train_tokenizer.py", c.tokenizer_argv(out_dir),
                                           c.tokenizer_last, TOKENIZER_EPOCHS)
    else:
        script, argv, reference, epochs = ("encoder/pretrain_mtp.py", c.pretrain_argv(out_dir), c.encoder_last,
                                           PRETRAIN_EPOCHS)
    assert kill_mid_run(script, argv, out_dir, tmp_path / "log_killed"), "the kill missed every checkpoint write"
    survivor = load_checkpoint(out_dir / "last.pth", stage)  # intact although a write was cut short
    for best in ("best.pth", "universal_hsi_encoder.pth"):
        if (out_dir / best).exists():
            load_checkpoint(out_dir / best, stage)
    assert survivor["epoch"] < epochs - 1, "the kill landed after the last epoch: nothing left to resume"

    resumed = run_script(script, [*argv, "--resume"], tmp_path / "log_resumed")
    assert resumed.code == 0, resumed.stderr[-2000:]
    assert f"resumed from {out_dir / 'last.pth'} after epoch {survivor['epoch'] + 1}" in resumed.stderr
    assert_same_state(load_checkpoint(out_dir / "last.pth", stage), load_checkpoint(reference, stage))


@pytest.mark.parametrize("extra", [[], ["use_lora=true", "adapt_steps=3"]], ids=["head", "head+fitted LoRA"])
def test_stage3_interrupt_then_resume_equals_an_uninterrupted_run(extra, c: Chain, tmp_path, monkeypatch):
    script = "anomaly/train_anomaly.py"
    argv = {run: c.anomaly_argv(tmp_path / run) + sets(["anomaly_epochs=3", *extra]) for run in ("whole", "cut")}
    assert run_in_process(script, argv["whole"]).code == 0
    last = tmp_path / "cut" / "last.pth"
    real, steps = objective.training_losses, []

    def interrupted_in_epoch_2(*args, **kwargs):
        if last.is_file():
            steps.append(1)
            if len(steps) == 2:  # after one optimizer step of epoch 2 that last.pth does not hold
                raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(objective, "training_losses", interrupted_in_epoch_2)
    cut = run_in_process(script, argv["cut"])
    assert cut.code == 130 and f"epoch 2; {last} holds the last finished epoch" in cut.stderr, cut.stderr[-2000:]
    assert load_checkpoint(last, "anomaly")["epoch"] == 0
    monkeypatch.undo()

    resumed = run_in_process(script, [*argv["cut"], "--resume"])
    assert resumed.code == 0, resumed.stderr[-2000:]
    assert f"resumed from {last} after epoch 1" in resumed.stderr
    ref, res = (load_checkpoint(tmp_path / run / "anomaly_detector.pth", "anomaly") for run in ("whole", "cut"))
    assert res["state_dict"].keys() == ref["state_dict"].keys()
    for key, value in ref["state_dict"].items():
        assert torch.equal(res["state_dict"][key], value), key
    assert res["metrics"]["loss_history"] == ref["metrics"]["loss_history"]
    assert_same_state(load_checkpoint(last, "anomaly"), load_checkpoint(tmp_path / "whole" / "last.pth", "anomaly"))
