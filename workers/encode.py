"""Per-chunk render tasks: decode the chunk, restore its faces through the actor pool, encode its segment.

The task runs the same `render_stage` as the local executor; only its restorer differs (a
`PoolRestorer` whose model passes happen on the restore actors, batched with other chunks' crops), and,
for a per-frame restorer with restore.batch_size auto, the crops per restore call: enough for the pool
to keep several requests in flight (the actors, not the task, bound a model pass).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import ray

from pipeline.memory import keep_freed_memory
from pipeline.stages import render_stage

from pipeline.plan import Chunk
from .cluster import bounded_map, match_threads_to_cpus
from .restore import PoolRestorer


@ray.remote
def _render_task(path: str, chunk: Chunk, info: Any, trackset: Any, refs: Any, restorer: PoolRestorer,
                 cfg: Any, segment: str) -> dict[str, Any]:
    match_threads_to_cpus()
    keep_freed_memory()
    restorer.bind(chunk.index, refs)
    if not cfg.restore.batch_size and not restorer.temporal_radius:  # a temporal call goes whole anyway
        cfg = dataclasses.replace(cfg, restore=dataclasses.replace(cfg.restore, batch_size=restorer.call_crops))
    return render_stage(path, chunk, info, trackset, refs, restorer, cfg, Path(segment))


def render_chunks(path: str, chunks: Iterable[Chunk], info: Any, trackset: Any, refs: Any,
                  restorer: PoolRestorer, cfg: Any, segment_for: Callable[[Chunk], Path]
                  ) -> Iterator[tuple[Chunk, dict]]:
    """Yield (chunk, stats) as segments are written, in any order. The track set goes to the object
    store once and is shared by every task (a reference, not a copy per chunk); the references travel
    as their store's name and each task reads only its own tracks."""
    info_ref, tracks_ref, cfg_ref = ray.put(info), ray.put(trackset), ray.put(cfg)
    task = _render_task.options(num_cpus=1, max_retries=cfg.run.retries)
    return bounded_map(
        lambda chunk: task.remote(path, chunk, info_ref, tracks_ref, refs, restorer, cfg_ref,
                                  str(segment_for(chunk))),
        chunks, cfg.run.max_inflight, "restore")
