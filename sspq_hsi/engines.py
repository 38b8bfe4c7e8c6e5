"""Where `sspq-hsi detect` scores its scenes: one task per scene (each head uses whole-scene statistics, so a scene
is never split), each engine yielding a SceneResult per scene as it finishes.

    for result in in_process(tasks): ...                    # --workers 1: here, one scene after another
    for result in local_pool(tasks, workers=2): ...         # --workers 2: worker processes on this machine
    for result in dask_cluster(tasks, "tcp://host:8786"): ...   # --cluster: the workers of a Dask scheduler

A worker process loads the models on its first scene and keeps them (sspq_hsi/scene_task.py). The local pool is
the standard library's ProcessPoolExecutor, so `--workers` needs nothing beyond the base install; a cluster runs
on Dask distributed (the `cluster` extra), which schedules, retries on a lost worker and reports, so nothing of
ours sits between the command and the cluster (docs/usage.md "Many scenes").
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from sspq_hsi.scene_task import SceneResult, SceneTask, failed, score_scene
from utils.errors import ConfigError

CONNECT_TIMEOUT_S = 30  # how long to wait for a Dask scheduler to answer
PARENT_POLL_S = 1.0  # how often a local worker checks that the command still runs


def in_process(tasks: Iterable[SceneTask]) -> Iterator[SceneResult]:
    for task in tasks:
        yield score_scene(task)


def _exit_with(parent: int) -> None:
    """Exit this worker once `parent` (the command's process) is gone: a killed command never shuts its pool down,
    and its workers would wait for their next scene forever. A scene cut short this way is redone by a re-run."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _start_worker(threads: int) -> None:
    """A pool worker's start: its share of the machine's cores as torch threads, and a watch on the command's
    process."""
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()


def _outcome(future: Future, task: SceneTask) -> tuple[SceneResult, bool]:
    """A pool future's result, and whether its worker process died (which breaks the pool)."""
    try:
        return future.result(), False
    except BrokenProcessPool:
        return failed(task, "a worker process died (killed, or out of memory?) while this scene or one beside it "
                            "ran; run the command again to retry it"), True


def _pool_round(queue: deque[SceneTask], workers: int, threads: int) -> Iterator[SceneResult]:
    """Score scenes from `queue` on a fresh pool until it is empty or a worker process dies. At most one scene per
    worker is in flight, so a dying worker (killed, out of memory) takes only the scenes then running with it."""
    # spawn: a fresh interpreter per worker, never a fork of a process whose torch threads are running
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _start_worker, (threads,))
    running: dict[Future, SceneTask] = {}
    try:
        while queue or running:
            broken = False
            while queue and len(running) < workers and not broken:
                try:
                    running[pool.submit(score_scene, queue[0])] = queue[0]
                    queue.popleft()
                except BrokenProcessPool:  # a worker died since the last scene; this one never started
                    broken = True
            if not broken:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    result, died = _outcome(future, running.pop(future))
                    broken |= died
                    yield result
            if broken:  # the pool ends every scene still in it; a fresh pool takes the queue
                for future in wait(running).done:
                    yield _outcome(future, running.pop(future))[0]
                return
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def local_pool(tasks: Iterable[SceneTask], workers: int) -> Iterator[SceneResult]:
    """`workers` spawned processes on this machine, each with its share of the cores (at most OMP_NUM_THREADS when
    that is set); a pool broken by a dying worker is replaced for the scenes not yet started."""
    queue = deque(tasks)
    threads = max(1, (os.cpu_count() or 1) // workers)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, min(threads, int(os.environ["OMP_NUM_THREADS"])))
    while queue:
        yield from _pool_round(queue, workers, threads)


def dask_cluster(tasks: Iterable[SceneTask], address: str) -> Iterator[SceneResult]:
    """The tasks on the Dask scheduler at `address`; its workers must import this project (installed there) and
    see the scene files and the output folder at the same paths."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError("--cluster runs on Dask distributed, which is not installed: pip install "
                          "-e '.[cluster]' in this repository (or pip install distributed)") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(f"--cluster {address}: no Dask scheduler answers there ({err}); start one "
                          f"(`dask scheduler`, then `dask worker {address}` on each node) or check the address") from None
    with client:
        futures = {client.submit(score_scene, task, pure=False): task for task in tasks}
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as err:  # noqa: BLE001 - KilledWorker, a lost connection: the cluster lost the scene
                    yield failed(futures[future], f"the cluster lost this scene: {type(err).__name__}: {err}")
        finally:
            client.cancel(list(futures))
