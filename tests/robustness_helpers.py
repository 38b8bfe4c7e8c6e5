"""Shared by tests/test_robustness_*.py: run the real stage scripts cheaply, and one tiny checkpoint chain.

Each `python anomaly/inference.py ...` pays ~10 s of imports (torch, transformers, sklearn, matplotlib)
on the 2-core test box. `run_script` therefore runs a script from a zygote: a multiprocessing forkserver
that imported the project once; every call forks a fresh process from it that executes the script file
as `__main__` with the given argv (runpy), exactly as `python script ...` would after its imports. The
exit status, stdout and stderr are the process's own. `run_python` is the plain subprocess, for the few
checks that must show both paths print the same thing, and for SIGKILL tests. `run_in_process` runs the
script's `run_cli` in the test's own process, for tests that inject a fault by monkeypatching.

`chain()` trains tokenizer -> encoder -> detector once per session through the real command lines (tiny
sizes via --set) in a temporary folder, on a tiny scene written by `write_scene`.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the zygote imports the project (pytest's `pythonpath = .` does the same)
    sys.path.insert(0, str(ROOT))
PRELOAD = ["robustness_helpers", "torch", "matplotlib.pyplot", "anomaly.inference", "anomaly.train_anomaly",
           "encoder.pretrain_mtp", "sspq_tokenizer.train_tokenizer", "main_pretrain", "main_anomaly"]

TOKENIZER_SET = ["device=cpu", "cpu_threads=1", "num_bands=8", "patch_size=4", "stride=2", "K_s=8", "K_x=8",
                 "hidden_dim=8", "num_layers=1", "band_stride=1", "pooled_length=4", "encoder_channels=[8]",
                 "batch_size=16", "max_patches_per_scene=null"]
TOKENIZER_EPOCHS = 20
PRETRAIN_SET = ["device=cpu", "cpu_threads=1", "max_seq_len=16", "pretrain_batch_size=8", "steps_per_epoch=2",
                "num_warmup_steps=1", "bert_config={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
                "intermediate_size: 32, hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.0}"]
PRETRAIN_EPOCHS = 12
ANOMALY_SET = ["device=cpu", "anomaly_epochs=2", "anomaly_batch_size=32", "inference_batch_size=32", "lm_block=2",
               "head_weights.one_class=1",  # a trained head: the training faults need a training loop
               "local_rx.inner=1", "local_rx.outer=5", "local_rx.n_components=4"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def _child(script: str, argv: list[str], out: str, err: str) -> None:
    """Forkserver child: stdout/stderr to files, then the script as __main__ (SystemExit -> exit status)."""
    import signal

    import torch

    # as from a terminal: a suite started in the background (`cmd &` ignores SIGINT there) must not pass that on
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)
    os.chdir(ROOT)
    for fd, name in ((1, out), (2, err)):
        handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    sys.argv = [script, *argv]
    runpy.run_path(str(ROOT / script), run_name="__main__")


_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = mp.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def start_script(script: str, argv: list[str], folder: Path):
    """Start `script argv` from the zygote; returns (process, stdout path, stderr path)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    proc = _context().Process(target=_child, args=(script, [str(a) for a in argv], str(out), str(err)))
    proc.start()
    return proc, out, err


def run_script(script: str, argv: list[str], folder: Path, timeout: float = 300) -> Result:
    proc, out, err = start_script(script, argv, folder)
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"{script} {argv} ran past {timeout} s")
    return Result(proc.exitcode, out.read_text(), err.read_text())


def run_in_process(script: str, argv: list[str]) -> Result:
    """`script argv` in this process (so a test can monkeypatch it): its run_cli's exit status, and
    stderr with the stage loggers' lines."""
    import contextlib
    import importlib
    import io

    from utils.cli import run_cli

    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    stderr = io.StringIO()
    old_argv, sys.argv = sys.argv, [script, *[str(a) for a in argv]]
    try:
        with contextlib.redirect_stderr(stderr):  # the stage loggers write to the current sys.stderr
            run_cli(module.main, module.build_parser(), sys.argv[1:])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    finally:
        sys.argv = old_argv
    return Result(code, "", stderr.getvalue())


def run_python(script: str, argv: list[str], timeout: float = 300) -> Result:
    """The plain command line: a fresh interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, script, *[str(a) for a in argv]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def scene_arrays(seed: int = 0, size: tuple[int, int] = (20, 20), bands: int = 16) -> dict[str, np.ndarray]:
    """Smooth mixed background with two small targets: cube (H, W, B) float32, gt (H, W) uint8."""
    rng = np.random.default_rng(seed)
    h, w = size
    x = np.linspace(0, 1, bands)
    ends = np.stack([np.sin(3 * x) + 1, np.exp(-x), 0.5 + 0.3 * np.cos(5 * x)])  # (3, B)
    abundance = rng.dirichlet(np.ones(3), size=(h, w))  # (H, W, 3)
    cube = abundance @ ends + 0.01 * rng.standard_normal((h, w, bands))  # (H, W, B)
    gt = np.zeros((h, w), np.uint8)
    gt[min(4, h - 1), min(5, w - 1)] = 1
    gt[min(12, h - 1):min(14, h), min(13, w - 1):min(15, w)] = 1
    cube[gt == 1] = 0.6 * cube[gt == 1] + 0.4 * (1.5 - x)
    return {"cube": cube.astype(np.float32), "gt": gt}


def write_scene(path: Path, **arrays) -> Path:
    data = {**scene_arrays(), **arrays}
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return path


@dataclass
class Chain:
    root: Path
    scene: Path
    tokenizer: Path  # best.pth
    tokenizer_last: Path
    encoder: Path  # universal_hsi_encoder.pth
    encoder_last: Path
    detector: Path  # anomaly_detector.pth

    def tokenizer_argv(self, out_dir: Path) -> list[str]:
        entries = f"[{{name: tiny, data_path: {self.scene}, domain_id: 0}}]"
        return sets(TOKENIZER_SET + [f"num_epochs={TOKENIZER_EPOCHS}", f"output_dir={out_dir}",
                                     f"pretrain_datasets={entries}"])

    def pretrain_argv(self, out_dir: Path) -> list[str]:
        entries = f"[{{name: tiny, data_path: {self.scene}, domain_id: 0}}]"
        return ["--tokenizer_ckpt", self.tokenizer] + sets(
            PRETRAIN_SET + [f"pretrain_epochs={PRETRAIN_EPOCHS}", f"output_dir={out_dir}",
                            f"pretrain_datasets={entries}"])

    def anomaly_argv(self, out_dir: Path, data_path: Path | str | None = None) -> list[str]:
        return ["--encoder_ckpt", self.encoder, "--data_path", data_path or self.scene] + sets(
            ANOMALY_SET + [f"output_dir={out_dir}"])

    def inference_argv(self, data_path: Path | str, out_dir: Path, detector: Path | None = None) -> list[str]:
        return ["--detector_ckpt", detector or self.detector, "--data_path", data_path, "--out_dir", out_dir,
                "--set", "device=cpu", "--set", "inference_batch_size=32"]


_CHAIN: Chain | None = None


def _must(result: Result, what: str) -> None:
    if result.code != 0:
        raise RuntimeError(f"{what} failed with exit status {result.code}:\n{result.stderr[-3000:]}")


def chain() -> Chain:
    """The session's tiny tokenizer -> encoder -> detector, trained once through the command lines."""
    global _CHAIN
    if _CHAIN is None:
        root = Path(tempfile.mkdtemp(prefix="sspq-robustness-"))
        atexit.register(shutil.rmtree, root, True)
        scene = write_scene(root / "tiny.npz")
        made = Chain(root, scene, root / "tok" / "best.pth", root / "tok" / "last.pth",
                     root / "enc" / "universal_hsi_encoder.pth", root / "enc" / "last.pth",
                     root / "det" / "anomaly_detector.pth")
        _must(run_script("sspq_tokenizer/train_tokenizer.py", made.tokenizer_argv(root / "tok"), root / "log_tok"),
              "tokenizer")
        _must(run_script("encoder/pretrain_mtp.py", made.pretrain_argv(root / "enc"), root / "log_enc"), "pretrain")
        _must(run_script("anomaly/train_anomaly.py", made.anomaly_argv(root / "det"), root / "log_det"),
              "train_anomaly")
        _CHAIN = made
    return _CHAIN
