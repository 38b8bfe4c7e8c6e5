"""Faults during long runs (issue 14), through the real command lines: each case injects one fault into
one stage and checks the one line the user sees, its exit status, that every file written before the
fault survives unchanged (files lost: 0) and that no temporary file is left behind.

Injected in this process (tests/robustness_helpers.run_in_process, monkeypatched): non-finite losses and
gradients, ENOSPC / EFBIG while a checkpoint or an output is written (os.fsync fails, as it does when a
full disk refuses the delayed blocks) or too little free space up front, unwritable and locked output
folders, checkpoints of other format versions. Sent for real: SIGINT to a training process (zygote
child), whose message's own command then resumes the run.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from anomaly import objective
from encoder.hsi_bert_encoder import HSIEncoderBERT
from robustness_helpers import ROOT, Chain, Result, chain, run_in_process, run_script, sets, start_script
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from utils.checkpoint import load_checkpoint, sha256_file
from utils.run_lock import LOCK_NAME, lock_output_dir

TOKENIZE, PRETRAIN, TRAIN, INFER = ("sspq_tokenizer/train_tokenizer.py", "encoder/pretrain_mtp.py",
                                    "anomaly/train_anomaly.py", "anomaly/inference.py")
FIRST_STEP = {TOKENIZE: ("sspq_tokenizer.train_tokenizer", "load_patches"),
              PRETRAIN: ("encoder.pretrain_mtp", "tokenize_scenes"),
              TRAIN: ("anomaly.train_anomaly", "load_universal_model"),
              INFER: ("anomaly.detector", "HSIAnomalyDetector.score")}  # each script's first real work
STAGE = {TOKENIZE: "tokenizer", PRETRAIN: "encoder", TRAIN: "anomaly"}  # of the checkpoints each script writes


@pytest.fixture(scope="module")
def c() -> Chain:
    return chain()


def argv_for(script: str, c: Chain, out: Path, tmp: Path) -> list[str]:
    """A short run of `script` writing into `out` (3 epochs; inference scores the chain's scene)."""
    if script == TOKENIZE:
        return c.tokenizer_argv(out) + ["--set", "num_epochs=3"]
    if script == PRETRAIN:
        return c.pretrain_argv(out) + ["--set", "pretrain_epochs=3"]
    if script == TRAIN:
        return c.anomaly_argv(out) + ["--set", "anomaly_epochs=3"]
    return c.inference_argv(c.scene, out) + ["--overwrite"]


def forbid_work(mp: pytest.MonkeyPatch, script: str) -> None:
    """The script's first piece of real work fails the test if it is reached."""
    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{script} started work in a folder it must refuse")
    module, name = FIRST_STEP[script]
    owner = importlib.import_module(module)
    for part in name.split(".")[:-1]:
        owner = getattr(owner, part)
    mp.setattr(owner, name.split(".")[-1], must_not_run)


def files_in(folder: Path) -> dict[str, str]:
    """sha256 of every file in `folder` but the lock and temporaries."""
    if not folder.is_dir():
        return {}
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != LOCK_NAME and not p.name.endswith(".tmp")}


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else []


def error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(result.error_lines) == 1 and lines[-1] == result.error_lines[0], result.stderr[-3000:]
    return lines[-1]


# ------------------------------------------------------------------------------------- injections
Trigger = Callable[[Path], bool]  # called with the output folder: strike now?


def after_first_epoch() -> Trigger:
    return lambda out: (out / "last.pth").is_file()


def nth_call(n: int) -> Callable[[], Trigger]:
    def make() -> Trigger:
        calls = [0]

        def strike(out: Path) -> bool:
            calls[0] += 1
            return calls[0] == n
        return strike
    return make


LOSS_OWNER = {TOKENIZE: (SSPQTokenizer, "forward"), PRETRAIN: (HSIEncoderBERT, "forward"),
              TRAIN: (objective, "training_losses")}


def bad_training_step(kind: str) -> Callable:
    """The training loss turns NaN ("loss"), or stays finite with NaN gradients ("grad"), once."""
    def inject(mp: pytest.MonkeyPatch, script: str, out: Path, trigger: Trigger, snap: Callable[[], None]) -> None:
        owner, name = LOSS_OWNER[script]
        real, fired = getattr(owner, name), []

        def poisoned(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            if not self.training or fired or not trigger(out):
                return result
            fired.append(True)
            snap()
            loss = result["loss"] if isinstance(result, dict) else result[0]
            if kind == "loss":
                loss = loss * float("nan")
            else:
                loss.register_hook(lambda grad: grad * float("nan"))
            if isinstance(result, dict):
                return {**result, "loss": loss}
            return (loss, *result[1:])
        mp.setattr(owner, name, poisoned)
    return inject


def failing_fsync(err: int) -> Callable:
    """os.fsync of the write that `trigger` picks fails with `err` (the disk refuses the file's blocks)."""
    def inject(mp: pytest.MonkeyPatch, script: str, out: Path, trigger: Trigger, snap: Callable[[], None]) -> None:
        real, fired = os.fsync, []

        def fsync(fd: int) -> None:
            if not fired and trigger(out):
                fired.append(True)
                snap()
                raise OSError(err, os.strerror(err))
            real(fd)
        mp.setattr(os, "fsync", fsync)
    return inject


def little_free_space(mp: pytest.MonkeyPatch, script: str, out: Path, trigger: Trigger,
                      snap: Callable[[], None]) -> None:
    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
    snap()
    mp.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - 1000, 1000)
               if Path(path) == out else real(path))


@dataclass
class Fault:
    id: str
    script: str
    inject: Callable
    trigger: Callable[[], Trigger]
    pattern: str  # the error line
    code: int = 2
    resume: bool = False  # then `--resume` without the fault finishes the run
    earlier: Callable[[Chain, Path, Path], None] | None = None  # writes the files an earlier run left


def earlier_detector(c: Chain, out: Path, tmp: Path) -> None:
    out.mkdir(parents=True)
    shutil.copy(c.detector, out / "anomaly_detector.pth")


def earlier_outputs(c: Chain, out: Path, tmp: Path) -> None:
    assert run_in_process(INFER, c.inference_argv(c.scene, out)).code == 0


KEPT = r"last\.pth \(the last finished epoch\) is kept: continue from it with --resume"
NO_SPACE = r"not written: No space left on device \(ENOSPC\); it needs \d+\.\d [KM]iB"
FAULTS = [
    Fault("tokenizer NaN loss", TOKENIZE, bad_training_step("loss"), after_first_epoch,
          rf"^error: tokenizer training diverged in epoch 2, step 1: the loss is nan; .*{KEPT}", resume=True),
    Fault("tokenizer NaN gradient", TOKENIZE, bad_training_step("grad"), after_first_epoch,
          rf"diverged in epoch 2, step 1: non-finite gradients in \d+ of \d+ parameter tensors; .*{KEPT}"),
    Fault("encoder NaN loss", PRETRAIN, bad_training_step("loss"), after_first_epoch,
          rf"^error: encoder training diverged in epoch 2, step 1: the loss is nan; .*{KEPT}", resume=True),
    Fault("encoder NaN gradient", PRETRAIN, bad_training_step("grad"), after_first_epoch,
          r"encoder training diverged in epoch 2, step 1: non-finite gradients"),
    Fault("anomaly NaN loss", TRAIN, bad_training_step("loss"), after_first_epoch,
          rf"^error: anomaly training diverged in epoch 2, step 1: the loss is nan; .*{KEPT}", resume=True,
          earlier=earlier_detector),
    Fault("tokenizer checkpoint, disk full", TOKENIZE, failing_fsync(errno.ENOSPC), after_first_epoch,
          rf"/(best|last)\.pth: {NO_SPACE}, .* free in .*; free some space or choose another output folder "
          r"\(earlier files are untouched\)", resume=True),
    Fault("encoder checkpoint, file too large", PRETRAIN, failing_fsync(errno.EFBIG), after_first_epoch,
          r"/(universal_hsi_encoder|last)\.pth: not written: File too large \(EFBIG\); it needs \d+\.\d KiB"),
    Fault("anomaly checkpoint, disk full", TRAIN, failing_fsync(errno.ENOSPC), nth_call(4),  # after 3 last.pth
          rf"/anomaly_detector\.pth: {NO_SPACE}", earlier=earlier_detector),
    *[Fault(f"{name}, disk full", INFER, failing_fsync(errno.ENOSPC), nth_call(i + 1),
            rf"/{re.escape(name)}: {NO_SPACE} \(\d+\.\d KiB with the files written with it\)",
            earlier=earlier_outputs)
      for i, name in enumerate(("anomaly_map.npy", "head_maps.npz", "metrics.json", "anomaly_map.png"))],
    Fault("outputs, too little free space", INFER, little_free_space, nth_call(1),
          r"/anomaly_map\.npy: not written: not enough free space; it needs \d+\.\d KiB .*, 1000 B are free in",
          earlier=earlier_outputs),
]


@pytest.mark.parametrize("case", FAULTS, ids=[f.id for f in FAULTS])
def test_fault(case: Fault, c: Chain, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = argv_for(case.script, c, out, tmp_path)
    if case.earlier is not None:
        case.earlier(c, out, tmp_path)
    snapshot: dict[str, str] = {}
    case.inject(monkeypatch, case.script, out, case.trigger(), lambda: snapshot.update(files_in(out)))
    result = run_in_process(case.script, argv)
    assert result.code == case.code, result.stderr[-3000:]
    line = error_line(result)
    assert re.search(case.pattern, line), f"{line!r} does not match {case.pattern!r}"
    print(f"{case.id}: {line}")
    assert snapshot, "the fault never struck"
    after = files_in(out)
    lost = [name for name, digest in snapshot.items() if after.get(name) != digest]
    assert lost == [] and temporaries(out) == [], (lost, temporaries(out))
    if case.resume:
        monkeypatch.undo()
        resumed = run_in_process(case.script, [*argv, "--resume"])
        assert resumed.code == 0, resumed.stderr[-3000:]
        assert re.search(r"resumed from .*last\.pth after epoch 1\b", resumed.stderr), resumed.stderr[-3000:]
        assert load_checkpoint(out / "last.pth", STAGE[case.script])["epoch"] == 2


# ------------------------------------------------------------------------------------- fp16 GradScaler
class FakeScaler:
    """GradScaler's bookkeeping: a step whose gradients were not finite is skipped and halves the scale."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.scale, self.found_inf, self.steps = enabled, 65536.0, False, 0

    def is_enabled(self) -> bool:
        return self.enabled

    def get_scale(self) -> float:
        return self.scale if self.enabled else 1.0

    def step(self, optimizer) -> None:
        if not self.found_inf:
            self.steps += 1

    def update(self) -> None:
        if self.enabled and self.found_inf:
            self.scale /= 2


def _guard(scaler: FakeScaler):
    import logging

    from utils.step_guard import StepGuard

    log = logging.getLogger("test.step_guard")
    guard = StepGuard("encoder", scaler, Path("no-such-folder") / "last.pth", log)
    guard.begin_epoch(0)
    return guard


def _backward(grad: float) -> list[torch.nn.Parameter]:
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), grad)
    return [param]


@pytest.mark.parametrize("grads, enabled, skipped, error", [
    ([1.0, float("inf"), float("nan"), 1.0], True, 2, None),  # fp16: skipped steps are counted, training goes on
    ([float("inf")] * 19 + [1.0] + [float("inf")] * 19, True, 38, None),  # never 20 in a row
    ([float("inf")] * 20, True, 20, r"epoch 1, step 20: 20 steps in a row had inf/NaN gradients under fp16"),
    ([1.0, float("nan")], False, 0, r"epoch 1, step 2: non-finite gradients in 1 of 1 parameter tensors"),
])
def test_grad_scaler_skips_are_counted_not_divergence(grads, enabled, skipped, error, caplog):
    from utils.errors import DivergenceError

    scaler = FakeScaler(enabled)
    guard = _guard(scaler)
    caplog.set_level("WARNING", logger="test.step_guard")
    with pytest.raises(DivergenceError, match=error) if error else contextlib.nullcontext():
        for grad in grads:
            scaler.found_inf = not torch.isfinite(torch.tensor(grad))
            guard.check(torch.tensor(0.5), _backward(grad))
            guard.step(torch.optim.SGD(_backward(1.0), lr=0.1))
    assert guard.skipped == skipped
    assert len([r for r in caplog.records if "GradScaler skipped" in r.getMessage()]) == skipped
    if skipped and not error:
        assert f"{skipped} skipped so far" in caplog.records[-1].getMessage()


def test_non_finite_loss_is_divergence_even_with_a_scaler():
    from utils.errors import DivergenceError

    with pytest.raises(DivergenceError, match=r"encoder training diverged in epoch 1, step 1: the loss is inf"):
        _guard(FakeScaler()).check(torch.tensor(float("inf")), _backward(1.0))


# ------------------------------------------------------------------------------------- SIGINT
@dataclass
class Interrupt:
    id: str
    script: str
    ready: Callable[[Path, str], bool]  # (output folder, stderr so far): send SIGINT now?
    pattern: str
    argv: Callable[[Chain, Path], list[str]] = field(default=lambda c, out: [])
    resume_set: list[str] = field(default_factory=list)  # appended to the message's command, to finish soon


INTERRUPTS = [
    Interrupt("tokenizer", TOKENIZE, lambda out, err: (out / "last.pth").is_file(),
              r"^error: interrupted in tokenizer training, epoch \d+; .*/last\.pth holds the last finished epoch; "
              r"continue with: python \S*sspq_tokenizer/train_tokenizer\.py .* --resume$",
              lambda c, out: c.tokenizer_argv(out) + ["--set", "num_epochs=500"], ["num_epochs=25"]),
    Interrupt("encoder", PRETRAIN, lambda out, err: (out / "last.pth").is_file(),
              r"^error: interrupted in encoder training, epoch \d+; .*/last\.pth holds the last finished epoch; "
              r"continue with: python \S*encoder/pretrain_mtp\.py .* --resume$",
              lambda c, out: c.pretrain_argv(out)),
    Interrupt("anomaly", TRAIN, lambda out, err: (out / "last.pth").is_file(),
              r"^error: interrupted in anomaly training, epoch \d+; .*/last\.pth holds the last finished epoch; "
              r"continue with: python \S*anomaly/train_anomaly\.py .* --resume$",
              lambda c, out: c.anomaly_argv(out) + ["--set", "anomaly_epochs=500"], ["anomaly_epochs=60"]),
    Interrupt("anomaly, before its first epoch ends", TRAIN, lambda out, err: (out / LOCK_NAME).is_file(),
              r"^error: interrupted in anomaly training, (before its first epoch|epoch 1), before its first "
              r"checkpoint: nothing to resume; run again: python \S*anomaly/train_anomaly\.py (?!.*--resume)",
              lambda c, out: c.anomaly_argv(out) + ["--set", "anomaly_epochs=500"]),
]


@pytest.mark.parametrize("case", INTERRUPTS, ids=[i.id for i in INTERRUPTS])
def test_sigint(case: Interrupt, c: Chain, tmp_path):
    out = tmp_path / "out"
    proc, _, err = start_script(case.script, case.argv(c, out), tmp_path / "log")
    deadline = time.time() + 120
    while not case.ready(out, err.read_text() if err.exists() else ""):
        assert proc.is_alive(), err.read_text()[-3000:]
        assert time.time() < deadline, "never got ready for the interrupt"
        time.sleep(0.01)
    present = files_in(out)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(120)
    result = Result(proc.exitcode, "", err.read_text())
    assert result.code == 130, result.stderr[-3000:]
    line = error_line(result)
    assert re.search(case.pattern, line), f"{line!r} does not match {case.pattern!r}"
    print(f"SIGINT {case.id}: {line}")
    assert set(present) <= set(files_in(out)) and temporaries(out) == []
    for name in present:
        load_checkpoint(out / name, STAGE[case.script])
    if "continue with: " in line:
        python, script, *args = shlex.split(line.split("continue with: ", 1)[1])
        assert python == "python" and (ROOT / script).resolve() == ROOT / case.script and args[-1] == "--resume"
        resumed = run_script(script, args + sets(case.resume_set), tmp_path / "log_resumed")
        assert resumed.code == 0, resumed.stderr[-3000:]
        assert f"resumed from {out / 'last.pth'}" in resumed.stderr


@pytest.mark.parametrize("first_epochs, resume_set, pattern", [
    (None, [], r"--resume: no .*/out/last\.pth to resume from; run without --resume first$"),
    (1, ["anomaly_epochs=2", "learning_rate_anomaly=0.5", "seed=1"], r"--resume: .*/out/last\.pth was written "
     r"with a different config \(learning_rate_anomaly, seed\); use the same config and overrides \(only "
     r"anomaly_epochs, device may change\), or start afresh without --resume$"),
    (1, [], r"--resume: .*/out/last\.pth already finished epoch 1 and anomaly_epochs is 1: nothing left to train; "
     r"raise anomaly_epochs to train on"),
], ids=["no last.pth", "another config", "all epochs done"])
def test_stage3_resume_refusals(first_epochs, resume_set, pattern, c: Chain, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = c.anomaly_argv(out) + ["--set", f"anomaly_epochs={first_epochs or 1}"]
    if first_epochs is not None:
        assert run_in_process(TRAIN, argv).code == 0
    written = files_in(out)
    forbid_work(monkeypatch, TRAIN)  # refused before the encoder is loaded
    result = run_in_process(TRAIN, [*argv, "--resume", *sets(resume_set)])
    assert result.code == 2
    line = error_line(result)
    assert re.search(pattern, line), f"{line!r} does not match {pattern!r}"
    print(f"resume refused: {line}")
    assert files_in(out) == written


def test_main_anomaly_passes_resume_to_training(c: Chain, tmp_path):
    """Ctrl-C in main_anomaly.py's training names `python main_anomaly.py ... --resume`: the flag must reach it."""
    out = tmp_path / "out"
    result = run_in_process("main_anomaly.py", [*c.anomaly_argv(out), "--out_dir", tmp_path / "maps", "--resume"])
    assert result.code == 2
    assert re.search(r"^error: --resume: no .*/out/last\.pth to resume from", error_line(result))


# ------------------------------------------------------------------------------------- unwritable folders
def _under_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file" / "out"


def _read_only(tmp: Path) -> Path:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return tmp / "ro" / "out"


@pytest.mark.parametrize("script", [TOKENIZE, PRETRAIN, TRAIN, INFER])
@pytest.mark.parametrize("make, reason", [
    (_under_a_file, r"Not a directory, ENOTDIR"),
    pytest.param(_read_only, r"Permission denied, EACCES", marks=pytest.mark.skipif(
        os.geteuid() == 0, reason="root writes into a read-only folder")),
], ids=["below a file", "read-only"])
def test_unwritable_output_folder_is_refused_before_any_work(script, make, reason, c: Chain, tmp_path, monkeypatch):
    out = make(tmp_path)
    forbid_work(monkeypatch, script)
    result = run_in_process(script, argv_for(script, c, out, tmp_path))
    assert result.code == 2, result.stderr[-3000:]
    line = error_line(result)
    assert re.search(rf"{re.escape(str(out))}: cannot write to this output folder \({reason}\); nothing was "
                     r"started: choose another output folder or make it writable$", line), line
    print(f"unwritable {script}: {line}")


def test_permission_denied_is_refused(c: Chain, tmp_path, monkeypatch):
    """The read-only case for root, who may write anywhere: the lock file's creation is refused."""
    out, real = tmp_path / "out", os.open

    def deny(path, *args, **kwargs):
        if Path(path).parent == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", deny)
    result = run_in_process(TOKENIZE, argv_for(TOKENIZE, c, out, tmp_path))
    assert result.code == 2
    assert re.search(r"out: cannot write to this output folder \(Permission denied, EACCES\); nothing was started",
                     error_line(result))


# ------------------------------------------------------------------------------------- two runs, one folder
HOLD = "import sys; from utils.run_lock import lock_output_dir; lock_output_dir(sys.argv[1]); print('held', flush=True); " \
       "sys.stdin.read()"


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("script", [TOKENIZE, PRETRAIN, TRAIN, INFER])
def test_second_run_on_a_folder_is_refused_with_the_first_ones_pid(script, c: Chain, tmp_path, monkeypatch):
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        forbid_work(monkeypatch, script)
        result = run_in_process(script, argv_for(script, c, out, tmp_path))
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert result.code == 2
    line = error_line(result)
    assert re.search(rf"out is in use by another run \(pid {holder.pid} on [^)]+\); wait for it to finish or choose "
                     rf"another output folder \(if no run uses it, delete .*/{re.escape(LOCK_NAME)}\)$", line), line
    print(f"locked {script}: {line}")
    assert not (out / LOCK_NAME).exists(), "the first run's lock outlived it"


@pytest.mark.parametrize("owner, taken_over", [
    ("killed", True),  # the run crashed (SIGKILL): its lock stays, its pid is gone
    ("reused pid", True),  # a live pid, but a process started at another time than the lock's
    ("other host", False),  # cannot be checked from here: honoured
    ("alive", False),
    ("unreadable", False),  # e.g. hand-edited: honoured, never guessed at
])
def test_a_crashed_runs_lock_does_not_stick(owner, taken_over, tmp_path):
    from utils.errors import OutputError

    out = tmp_path / "out"
    if owner == "killed":
        holder = _holder(out)
        holder.kill()
        holder.wait()
        assert (out / LOCK_NAME).exists()
    elif owner == "unreadable":
        out.mkdir()
        (out / LOCK_NAME).write_text('{"pid": "-1"}')
    else:
        out.mkdir()
        record = {"pid": os.getppid(), "host": socket.gethostname(), "started": None}
        record.update({"reused pid": {"started": "1"}, "other host": {"host": "elsewhere"}}.get(owner, {}))
        if owner == "alive":
            record["started"] = Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (out / LOCK_NAME).write_text(json.dumps(record))
    if taken_over:
        lock_output_dir(out)
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    else:
        who = "a run whose lock file cannot be read" if owner == "unreadable" else f"pid {os.getppid()} on "
        with pytest.raises(OutputError, match=rf"in use by another run \({who}"):
            lock_output_dir(out)


# ------------------------------------------------------------------------------------- version skew
@pytest.mark.parametrize("version, pattern", [
    (2, r"checkpoint format 2 is newer than format 1, the one this code reads: it was written by a later sspq-hsi; "
        r"update this checkout to read it, or re-create it with this one: anomaly/train_anomaly\.py writes it"),
    (0, r"checkpoint has format 0, from before format 1, the one this code reads; read it with the sspq-hsi version "
        r"that wrote it, or re-create it: anomaly/train_anomaly\.py writes it"),
    (None, r"checkpoint has no format version, from before format 1"),
])
def test_checkpoint_of_another_format_version(version, pattern, c: Chain, tmp_path):
    ckpt = torch.load(c.detector, weights_only=True)
    if version is None:
        del ckpt["format_version"]
    else:
        ckpt["format_version"] = version
    forged = tmp_path / "det.pth"
    torch.save(ckpt, forged)
    result = run_in_process(INFER, c.inference_argv(c.scene, tmp_path / "out", detector=forged))
    assert result.code == 2
    line = error_line(result)
    assert re.search(rf"det\.pth: {pattern}", line), line
    print(f"format {version}: {line}")
