"""The Ray executor: the local executor's interface (pipeline/stages.py), run as Ray tasks and actors."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipeline.plan import Chunk
from .cluster import connect
from .detect import detect_chunks
from .encode import render_chunks
from .restore import RestorePool


class RayExecutor:
    """Detection tasks, then render tasks whose model passes go to a pool of batching restore actors.

    The pool starts only when some chunk still needs restoring, and stops when the executor closes.
    """

    def __init__(self, cfg: Any, make_restorer: Callable[[], Any]):
        self.cfg = cfg
        self.make_restorer = make_restorer
        self.pool: RestorePool | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "RayExecutor":
        self._stack.enter_context(connect(self.cfg.run))
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.pool is not None:
                self.pool.shutdown()
        finally:
            self.pool = None
            self._stack.close()

    def detect(self, path: str, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, Any]]:
        return detect_chunks(path, chunks, self.cfg)

    def render(self, path: str, chunks: Iterable[Chunk], info: Any, trackset: Any, refs: Any,
               segment_for: Callable[[Chunk], Path]) -> Iterator[tuple[Chunk, dict]]:
        chunks = list(chunks)
        if not chunks:
            return iter(())
        if self.pool is None:
            self.pool = RestorePool(self.make_restorer, self.cfg.run)
        return render_chunks(path, chunks, info, trackset, refs, self.pool.restorer(), self.cfg, segment_for)

    def restore_stats(self) -> list[dict[str, int]]:
        """Requests, batches and crops per actor: how well dynamic batching merged the chunks' calls."""
        return self.pool.stats() if self.pool is not None else []
