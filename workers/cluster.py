"""Connect to Ray, size the restore pool, and run chunk tasks with bounded objects in flight."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any, Callable, Iterable, Iterator

import ray

from pipeline.errors import ReelfaceError

from pipeline.plan import Chunk, chunk_failed


def _local_cpus() -> int:
    """Cores this process may use (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def connect(run_cfg: Any) -> Iterator[None]:
    """Use the Ray already initialised in this process, join `run.address` / RAY_ADDRESS, or start a
    local Ray with the detected cores (Ray detects the GPUs). Shuts down only a Ray it started."""
    if ray.is_initialized():
        yield
        return
    address = run_cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=_local_cpus(), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ReelfaceError(f"could not start or reach {where}: {exc}. For a cluster, run `ray start --head` "
                            "on the head node and pass its address with --address HOST:6379") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str) -> None:
    """Fail in seconds on a HOST:PORT nobody listens on: ray.init would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # ray://..., "auto", "local": Ray's own resolution
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ReelfaceError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}). Start one with "
                            "`ray start --head` on the head node and pass its HOST:6379 with --address, or "
                            "leave --address and RAY_ADDRESS unset to run on a local Ray") from None


def match_threads_to_cpus() -> None:
    """In a task: let OpenCV and torch use as many threads as the task was given cores. Their default
    is every core of the node, so N tasks on an N-core node would run N*N threads."""
    import cv2
    import torch

    cpus = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    cv2.setNumThreads(cpus)
    torch.set_num_threads(cpus)


# A custom resource that marks where restore actors may run (`ray start --resources '{"restore": N}'`):
# each actor takes one unit, so a node offering N hosts at most N actors and nodes without it host none.
RESTORE_RESOURCE = "restore"


def restore_actor_count(run_cfg: Any) -> int:
    """`run.restore_actors`, or one per GPU share in the cluster, or one per unit of the `restore`
    resource, or one."""
    if run_cfg.restore_actors > 0:
        return run_cfg.restore_actors
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    if gpus and run_cfg.gpus_per_actor > 0:
        return max(1, int(gpus // run_cfg.gpus_per_actor))
    return max(1, int(resources.get(RESTORE_RESOURCE, 1)))


def bounded_map(
    submit: Callable[[Chunk], "ray.ObjectRef"],
    chunks: Iterable[Chunk],
    max_inflight: int,
    stage: str,
) -> Iterator[tuple[Chunk, Any]]:
    """Submit one task per chunk with at most `max_inflight` running, and yield (chunk, result) as
    each finishes, so the driver can record it at once. Results are fetched one at a time at this
    edge, which keeps driver memory flat however long the video.

    A task that fails for good (after Ray's own retries) cancels the others and raises a ReelfaceError
    naming the chunk; what finished before stays recorded for a resume.
    """
    todo = iter(chunks)
    running: dict[ray.ObjectRef, Chunk] = {}

    def fill() -> None:
        while len(running) < max(1, max_inflight):
            chunk = next(todo, None)
            if chunk is None:
                return
            running[submit(chunk)] = chunk

    fill()
    try:
        while running:
            [ready], _ = ray.wait(list(running), num_returns=1)
            chunk = running.pop(ready)
            try:
                result = ray.get(ready)
            except (ray.exceptions.RayError, ReelfaceError) as exc:
                raise chunk_failed(chunk, stage, root_cause(exc)) from exc
            yield chunk, result
            fill()
    finally:
        for ref in running:  # a failure or an interrupted driver: stop the rest, don't leave them running
            ray.cancel(ref, force=True)


def root_cause(exc: BaseException) -> BaseException:
    """A task error wraps the worker's exception (and the worker's may wrap an actor's): the innermost
    one says what happened."""
    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc
