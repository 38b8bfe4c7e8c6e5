"""utils/distributed.py: single-process no-op, per-rank shards, and real 2-process gloo DDP pre-training runs:
`torchrun --standalone`, and two torchrun agents ("nodes") joined at a c10d rendezvous endpoint."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sspq_tokenizer.train_tokenizer import train_sspq_tokenizer
from utils.checkpoint import load_checkpoint
from utils.distributed import DistInfo, distributed_session, shard, wrap_ddp

ROOT = Path(__file__).resolve().parents[1]


def test_without_torchrun_everything_is_single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed_session("cpu") as info:
        assert (info.rank, info.world_size, info.is_main, info.enabled) == (0, 1, True, False)
        model = torch.nn.Linear(2, 2)
        assert wrap_ddp(model, info) is model


def test_shards_are_disjoint_and_cover_everything():
    items = list(range(10))
    parts = [shard(items, DistInfo(r, 3, r, torch.device("cpu"))) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7]


@pytest.fixture(scope="module")
def tokenizer_ckpt(tmp_path_factory):
    return train_sspq_tokenizer("configs/tokenizer.yaml", [
        "num_epochs=1", "max_patches_per_scene=60", "hidden_dim=8", "encoder_channels=[8]", "K_s=16", "K_x=16",
        "num_bands=16", "cpu_threads=1", "augment=false", "device=cpu",
        f"output_dir={tmp_path_factory.mktemp('tok')}"])


def pretrain_args(tok: Path, out: Path) -> list[str]:
    return ["encoder/pretrain_mtp.py", "--config", "configs/pretrain.yaml", "--tokenizer_ckpt", str(tok),
            "--set", f"output_dir={out}", "--set", "pretrain_epochs=1", "--set", "steps_per_epoch=4",
            "--set", "num_warmup_steps=1", "--set", "pretrain_batch_size=8", "--set", "device=cpu",
            "--set", "bert_config.hidden_size=32", "--set", "bert_config.num_attention_heads=2",
            "--set", "bert_config.intermediate_size=64"]


def assert_one_checkpoint_of_world_size_2(out: Path, log: str) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["last.pth", "universal_hsi_encoder.pth"]  # no stray temp files
    assert log.count(" pretrain wrote ") == 1 and log.count(" pretrain encoder: hidden") == 1  # rank 0 only
    assert "world size 2" in log
    ckpt = load_checkpoint(out / "universal_hsi_encoder.pth", "encoder")
    assert ckpt["metrics"]["world_size"] == 2 and ckpt["step"] == 4


@pytest.mark.slow
def test_two_process_gloo_run_writes_one_checkpoint(tokenizer_ckpt, tmp_path):
    out = tmp_path / "enc"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *pretrain_args(tokenizer_ckpt, out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_one_checkpoint_of_world_size_2(out, run.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_meet_at_a_rendezvous_endpoint(tokenizer_ckpt, tmp_path):
    """docs/usage.md's multi-node command as far as one machine allows: two torchrun agents (the two "nodes"), one
    process each, started apart and joined by the c10d rendezvous at an endpoint; one of them hosts its store."""
    out = tmp_path / "enc"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
              "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{free_port()}", "--rdzv_id=sspq-test",
              *pretrain_args(tokenizer_ckpt, out)]
    nodes = [subprocess.Popen(launch, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    logs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in logs]
    assert_one_checkpoint_of_world_size_2(out, "".join(err for _, err in logs))
