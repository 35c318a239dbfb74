"""A pool of restore actors that batch face crops across chunks and tracks.

Each actor owns one restorer (one model on one GPU). Chunk tasks run the ordinary stage code
(`pipeline.process.restore_frames`) with a `PoolRestorer`: it has the Restorer protocol, and each of its
`restore` calls becomes a request to an actor. An actor queues the requests of all chunk tasks that
talk to it and runs them as one model pass once `run.batch_crops` crops are waiting or the oldest has
waited `run.batch_wait_ms` (dynamic batching), then hands each caller its own rows.

Multi-frame restorers (temporal_radius > 0) get one ordered run of one track per call, so their
requests are never merged: a merged batch would put two tracks in one window.

Pipelining: a chunk task's call is cut into requests of at most `run.batch_crops` crops (a full pass
each), and up to `run.requests_in_flight` of them are outstanding at once, so an actor has the next
pass queued while it runs one (a task that waited for each request left its actor idle between them:
0.19 of the ideal at one actor). Each request goes to the actor with the fewest crops outstanding over
all chunk tasks (`balance.LeastLoaded`). Backpressure: a chunk task holds at most that many requests in
flight and `run.max_inflight` chunks run, whatever the video's length.

Memory: crops stay in their wire form (uint8/uint16) until they are needed as floats: a chunk task
converts one request at a time and writes the answers into one output tensor, an actor converts the
requests of a pass straight into the pass's batch (queued requests cost their wire bytes, not float32).

Faults: an actor that dies (a crashed CUDA context, a killed process) is restarted by Ray
(`max_restarts`) and its unfinished requests are sent again (`max_task_retries`); restorers are
deterministic, so a retried request gives the same rows.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
import torch

from pipeline.errors import ReelfaceError
from pipeline.memory import keep_freed_memory
from pipeline.restorers.base import CROP_SIZE, GRID, restorer_output

from .balance import LeastLoaded
from .cluster import RESTORE_RESOURCE, restore_actor_count, root_cause

RestorerFactory = Callable[[], Any]


@dataclass
class RefKeys:
    """References sent by name: the run's reference store (its folder in the shared work dir) and one
    track id per crop. The actor reads each track from the store once, instead of K reference crops per
    track travelling in every call."""

    store: Any  # pipeline.references.ReferenceStore
    keys: list


LEVEL = GRID // 255  # grid steps in one 8-bit level


def to_wire(crops: Any, keep: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Crops (B, 3, H, W) in [0, 1] -> what crosses Ray, the smallest exact form: uint8 when they are whole
    8-bit levels (8-bit crops cut on the pixel grid), uint16 when they are on the face path's grid
    (crops_to_tensor's and restorer_output's: every crop cut from a frame, every answer), float32 for
    anything else. numpy arrays are read from the object store without a copy.

    `keep(crop)` is applied to each crop first (the actor's answers: restorer_output). One crop at a
    time, so the float temporaries are one crop's (3 MB at 512 px), not the request's: a process keeps
    its largest temporaries in its heap for good (glibc), and 16 actors and 16 render tasks share a node."""
    keep = keep or (lambda crop: crop)
    levels = np.empty(crops.shape, np.uint16)
    whole_levels = True
    for k in range(len(crops)):
        crop = keep(crops[k:k + 1]).detach().float().cpu()
        scaled = crop.mul(GRID).round_()
        lowest, highest = torch.aminmax(scaled)
        if lowest < 0 or highest > GRID or not torch.equal(scaled.div(GRID), crop):
            return torch.cat([keep(crops[j:j + 1]).detach().float().cpu() for j in range(len(crops))]).numpy()
        levels[k] = scaled.numpy()  # integers up to 65535: exact in uint16
        # told in integers: a float remainder costs 6x as much
        whole_levels = whole_levels and np.array_equal(levels[k] // LEVEL * LEVEL, levels[k])
    if whole_levels:
        return np.floor_divide(levels, LEVEL, out=levels).astype(np.uint8)
    return levels


def from_wire(crops: np.ndarray, out: Any = None) -> Any:
    """to_wire's array -> float tensor in [0, 1], written into `out` (a contiguous float32 tensor of its
    shape) when given; a copy either way: the object store's arrays are read-only."""
    out = torch.empty(crops.shape, dtype=torch.float32) if out is None else out
    if crops.dtype in (np.uint8, np.uint16):
        top = 255.0 if crops.dtype == np.uint8 else float(GRID)
        np.divide(crops, top, out=out.numpy(), dtype=np.float32)
    else:
        out.numpy()[...] = crops
    return out


@dataclass
class _Request:
    crops: np.ndarray  # to_wire's form, (B, 3, H, W)
    refs: list | None
    scale: float | None  # for restorers that take any crop size (restorers.base.Restorer)
    done: asyncio.Future


class RestoreActor:
    """One restorer behind an asyncio queue; model passes run on one thread so requests keep queueing."""

    def __init__(self, make_restorer: RestorerFactory, batch_crops: int, batch_wait_s: float, balancer: Any,
                 index: int):
        self.balancer, self.index = balancer, index  # the pool's LeastLoaded, and this actor's place in it
        keep_freed_memory()  # the restorer's large arrays reuse freed memory (pipeline/memory.py)
        try:
            self.restorer = make_restorer()
        except Exception as exc:
            # kept, and raised by describe(): an exception in __init__ reaches the driver only as a
            # message inside ActorDiedError, and the user's ReelfaceError (missing weights...) is lost
            self.restorer, self.failed = None, exc
            return
        self.failed = None
        self.batch_crops = max(1, batch_crops)
        self.batch_wait_s = max(0.0, batch_wait_s)
        self.merge = getattr(self.restorer, "temporal_radius", 0) == 0
        self.pending: collections.deque[_Request] = collections.deque()
        self.model_thread = ThreadPoolExecutor(max_workers=1)
        self.stores: dict[Path, Any] = {}  # one per run's store: its cache outlives a request
        self.wakeup: asyncio.Event | None = None
        self.server: asyncio.Task | None = None
        # deepest_queue: the most requests waiting when a pass began (how far callers pipeline)
        self.counts = {"requests": 0, "batches": 0, "crops": 0, "deepest_queue": 0}

    def describe(self) -> dict[str, Any]:
        if self.failed is not None:
            raise self.failed
        return {"name": self.restorer.name, "temporal_radius": getattr(self.restorer, "temporal_radius", 0),
                "crop_size": getattr(self.restorer, "crop_size", CROP_SIZE),
                "keeps_colour": getattr(self.restorer, "keeps_colour", False)}

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    async def restore(self, crops: Any, refs: list | RefKeys | None, scale: float | None = None) -> Any:
        if self.server is None:  # the event loop exists only once a call runs
            self.wakeup = asyncio.Event()
            self.server = asyncio.get_running_loop().create_task(self._serve())
        if isinstance(refs, RefKeys):
            store = self.stores.setdefault(refs.store.folder, refs.store)
            refs = [store.get(key) for key in refs.keys]
        request = _Request(crops, refs, scale, asyncio.get_running_loop().create_future())
        self.pending.append(request)
        self.counts["requests"] += 1
        self.wakeup.set()
        try:
            restored = await request.done
        finally:  # the pass is over: this actor is free for more (before the answer's conversion)
            self.balancer.release.remote(self.index, len(crops))
        # converted here, per caller, while the model thread already runs the next pass; only what the
        # face path keeps of an answer (restorer_output) travels, so it fits the uint16 grid
        return to_wire(restored, keep=restorer_output)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            deadline = loop.time() + self.batch_wait_s
            while self.merge and self._waiting_crops() < self.batch_crops and loop.time() < deadline:
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            self.counts["deepest_queue"] = max(self.counts["deepest_queue"], len(self.pending))
            batch = self._take_batch()
            try:
                outputs = await loop.run_in_executor(self.model_thread, self._run, batch)
            except Exception as exc:  # every caller in the batch learns why
                for request in batch:
                    request.done.set_exception(exc)
                continue
            for request, output in zip(batch, outputs):
                request.done.set_result(output)

    def _waiting_crops(self) -> int:
        return sum(len(r.crops) for r in self.pending)

    def _take_batch(self) -> list[_Request]:
        batch = [self.pending.popleft()]
        size = len(batch[0].crops)
        while (self.merge and self.pending and size + len(self.pending[0].crops) <= self.batch_crops
               and (self.pending[0].refs is None) == (batch[0].refs is None)
               and self.pending[0].scale == batch[0].scale):
            size += len(self.pending[0].crops)
            batch.append(self.pending.popleft())
        return batch

    def _run(self, batch: list[_Request]) -> list[Any]:
        bounds = list(itertools.accumulate(len(r.crops) for r in batch))
        spans = list(zip([0, *bounds[:-1]], bounds))
        crops = torch.empty((bounds[-1], *batch[0].crops.shape[1:]), dtype=torch.float32)
        for request, (a, b) in zip(batch, spans):
            from_wire(request.crops, out=crops[a:b])
        refs = None if batch[0].refs is None else [ref for r in batch for ref in r.refs]
        # on the CPU: the chunk task that gets these rows back may run on a node without a GPU
        told = {} if batch[0].scale is None else {"scale": batch[0].scale}
        restored = self.restorer.restore(crops, refs, **told).cpu()
        self.counts["batches"] += 1
        self.counts["crops"] += len(crops)
        return [restored[a:b] for a, b in spans]


class PoolRestorer:
    """The Restorer protocol over the actor pool, for `restore_frames` inside a chunk task.

    A call is cut into requests of at most `request_crops`; up to `in_flight` of them are outstanding
    at once (the next one sent as soon as any answers), each to the least-loaded actor of the pool, ties
    taken in turn from a different actor per chunk, so concurrent chunk tasks spread out. A temporal
    restorer's call is one window of one track: it goes whole.
    """

    def __init__(self, actors: list, balancer: Any, described: dict[str, Any], request_crops: int,
                 in_flight: int):
        self.actors = actors
        self.balancer = balancer
        # the protocol's attributes are the actors' restorer's: the face path crops and blends for it
        self.name, self.temporal_radius = described["name"], described["temporal_radius"]
        self.crop_size, self.keeps_colour = described["crop_size"], described["keeps_colour"]
        self.request_crops = max(1, request_crops)
        self.in_flight = max(1, in_flight)
        self._turn = 0
        self._store: Any = None

    @property
    def call_crops(self) -> int:
        """Crops per restore call that keep `in_flight` full requests outstanding: the render task's
        batch size when restore.batch_size is auto."""
        return self.request_crops * self.in_flight

    def bind(self, chunk_index: int, refs: Any) -> None:
        """In the chunk task: break ties between idle actors from this chunk's actor on, and keep the run's
        reference store, to send track ids instead of reference crops."""
        self._turn = chunk_index
        self._store = refs if hasattr(refs, "key_of") else None

    def restore(self, crops: Any, refs: list | None = None, scale: float | None = None) -> Any:
        if refs is not None and self._store is not None:
            keys = [self._store.key_of(r) for r in refs]
            if None not in keys:
                refs = RefKeys(self._store, keys)
        step = len(crops) if self.temporal_radius else self.request_crops
        restored = torch.empty(crops.shape, dtype=torch.float32)
        pending: dict[Any, slice] = {}
        for lo in range(0, len(crops), step):
            rows = slice(lo, min(lo + step, len(crops)))
            if len(pending) == self.in_flight:
                self._collect(pending, restored)
            wire = to_wire(crops[rows])
            actor = ray.get(self.balancer.acquire.remote(len(wire), self._turn))
            self._turn += 1
            pending[self.actors[actor].restore.remote(wire, _rows(refs, rows), scale)] = rows
        while pending:
            self._collect(pending, restored)
        return restored

    @staticmethod
    def _collect(pending: dict, restored: Any) -> None:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        from_wire(ray.get(ready), out=restored[pending.pop(ready)])


def _rows(refs: list | RefKeys | None, rows: slice) -> list | RefKeys | None:
    """The references of some crops of a call."""
    if refs is None:
        return None
    if isinstance(refs, RefKeys):
        return RefKeys(refs.store, refs.keys[rows])
    return refs[rows]


class RestorePool:
    """Start the restore actors: one restorer each, on its GPU share when the cluster has GPUs."""

    def __init__(self, make_restorer: RestorerFactory, run_cfg: Any):
        self.request_crops, self.in_flight = run_cfg.batch_crops, run_cfg.requests_in_flight
        count = restore_actor_count(run_cfg)
        resources = ray.cluster_resources()
        has_gpus = resources.get("GPU", 0) > 0
        if count > resources.get(RESTORE_RESOURCE, count):  # the extra actors would wait for a node forever
            raise ReelfaceError(f"run.restore_actors is {count} but the cluster's nodes offer "
                                f"{resources[RESTORE_RESOURCE]:g} units of the '{RESTORE_RESOURCE}' resource (one "
                                "per actor); lower run.restore_actors or add nodes with that resource")
        actor_class = ray.remote(RestoreActor).options(
            resources={RESTORE_RESOURCE: 1} if RESTORE_RESOURCE in resources else None,
            # CPU actors reserve no core: on a small machine reserved cores would starve the chunk
            # tasks that feed them (a deadlock); on GPU nodes the GPU share is what places them.
            num_cpus=0,
            num_gpus=run_cfg.gpus_per_actor if has_gpus else 0,
            max_restarts=run_cfg.retries,
            max_task_retries=run_cfg.retries,
            max_concurrency=1000,  # async actor: concurrent requests are what it batches
        )
        # the counter every chunk task asks which actor to send to; no core reserved, like the actors
        self.balancer = ray.remote(LeastLoaded).options(num_cpus=0, max_restarts=run_cfg.retries,
                                                        max_task_retries=run_cfg.retries).remote(count)
        self.actors = [actor_class.remote(make_restorer, run_cfg.batch_crops, run_cfg.batch_wait_ms / 1000,
                                          self.balancer, index) for index in range(count)]
        # waits until every actor built its restorer, so missing weights surface here, once
        try:
            described = ray.get([a.describe.remote() for a in self.actors])
        except ray.exceptions.RayError as exc:
            self.shutdown()
            cause = root_cause(exc)
            if isinstance(cause, ReelfaceError):
                raise ReelfaceError(str(cause)) from exc
            raise ReelfaceError(f"the restore actors could not start their restorer: "
                                f"{type(cause).__name__}: {cause}") from exc
        self.described = described[0]

    def restorer(self) -> PoolRestorer:
        return PoolRestorer(self.actors, self.balancer, self.described, self.request_crops, self.in_flight)

    def stats(self) -> list[dict[str, int]]:
        return ray.get([a.stats.remote() for a in self.actors])

    def shutdown(self) -> None:
        for actor in [*self.actors, self.balancer]:
            ray.kill(actor, no_restart=True)
