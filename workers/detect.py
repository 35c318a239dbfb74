"""Detection as Ray tasks: one per chunk, at most `run.max_inflight` at a time."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import ray

from pipeline.stages import detect_stage

from pipeline.plan import Chunk
from .cluster import bounded_map, match_threads_to_cpus


@ray.remote
def _detect_task(path: str, chunk: Chunk, cfg: Any) -> Any:
    match_threads_to_cpus()
    return detect_stage(path, chunk, cfg)


def detect_chunks(path: str, chunks: Iterable[Chunk], cfg: Any) -> Iterator[tuple[Chunk, Any]]:
    """Yield (chunk, ChunkDetections) as chunks finish, in any order."""
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    task = _detect_task.options(num_cpus=1, num_gpus=cfg.run.gpus_per_detect if has_gpus else 0,
                                max_retries=cfg.run.retries)
    cfg_ref = ray.put(cfg)
    return bounded_map(lambda chunk: task.remote(path, chunk, cfg_ref), chunks, cfg.run.max_inflight, "detect")
