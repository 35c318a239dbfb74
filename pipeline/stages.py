"""The per-chunk stages and the in-process executor.

Every executor runs these same functions: `LocalExecutor` below in a loop, the Ray executor
(workers/) as tasks. Nothing here imports Ray.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator

from .errors import ReelfaceError
from .plan import Chunk, chunk_failed

RestorerFactory = Callable[[], Any]


def build_restorer(restore_cfg: Any) -> Any:
    """The restorer named in the config (module-level so Ray can send it to an actor by reference)."""
    from .restorers.registry import get_restorer

    return get_restorer(restore_cfg)


def default_restorer_factory(cfg: Any) -> RestorerFactory:
    """Builds the configured restorer where it will run: in this process, or in each Ray actor."""
    import functools

    return functools.partial(build_restorer, cfg.restore)


def detect_stage(path: str, chunk: Chunk, cfg: Any) -> Any:
    """Faces and shot-cut features of the chunk's own frames (detection needs no context frames)."""
    from tracking.detect import detect_chunk

    return detect_chunk(path, chunk.start, chunk.stop, cfg)


def tracks_stage(detections: list, frame_count: int, cfg: Any) -> Any:
    """Shot cuts, tracks and person ids for the whole video, from every chunk's detections."""
    from tracking.build import build_tracks

    return build_tracks(detections, frame_count, cfg)


def references_stage(path: str, trackset: Any, cfg: Any, store: Any, keep: int | None) -> dict:
    """Choose every track's references, store the `keep` that the restorer uses (references.ReferenceStore),
    and return what was chosen and why, dict[track_id, TrackReferences], for the report."""
    from .references import select_references

    store.clear()  # a redone stage must not leave another choice's tracks behind
    return select_references(path, trackset, cfg, store, keep)


@functools.lru_cache(maxsize=2)
def report_embedder(name: str, device: str) -> Any:
    """The identity embedder for the report's before/after similarity, loaded once per process."""
    from tracking.embedders import get_embedder

    return get_embedder(SimpleNamespace(track=SimpleNamespace(embedder=name), detect=SimpleNamespace(device=device)))


def partial_path(path: Path) -> Path:
    """Where a file is written before it is complete: same folder and suffix (the container format
    follows the suffix), a name nothing else matches."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def render_stage(path: str, chunk: Chunk, info: Any, trackset: Any, refs: Any, restorer: Any, cfg: Any,
                 segment: Path) -> dict[str, Any]:
    """Decode the chunk with its context frames, restore its faces, encode its own frames to `segment`.

    The segment appears under its name only when complete, so a killed run never leaves a segment
    that looks finished.
    """
    from .manifest import durable_replace
    from .process import context_frames_needed, restore_frames
    from .video import VideoWriter, decode

    needed = context_frames_needed(restorer, cfg.blend.temporal)
    if cfg.run.context_frames < needed:
        # fewer would make frames near chunk borders depend on where the chunks were cut
        raise ReelfaceError(f"run.context_frames is {cfg.run.context_frames} but the {restorer.name} restorer and the "
                            f"stabiliser (blend.temporal) need {needed} context frames on each side of a chunk; set run.context_frames={needed}")
    began = time.perf_counter()
    frames = list(decode(path, chunk.context_start, chunk.context_stop, info=info))
    if len(frames) != chunk.context_stop - chunk.context_start:
        raise ReelfaceError(f"decoding frames {chunk.context_start}..{chunk.context_stop - 1} of {path} gave "
                            f"{len(frames)} frames: the file may be truncated or changed during the run")
    stats: dict = {}
    measure = cfg.run.report and bool(trackset.tracks)
    segment = Path(segment)
    tmp = partial_path(segment)
    # frames are encoded on their own thread as soon as they are final, while later faces are restored:
    # encoding after the last face left a core idle for the encoder's whole time
    with VideoWriter(tmp, info, cfg.encode) as writer, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode") as encoder:
        written: list[Future] = []

        def encode(frame: Any) -> None:
            if chunk.start <= frame.index < chunk.stop:
                written.append(encoder.submit(writer.write, frame))

        restore_frames(frames, trackset, refs, restorer, cfg, stats=stats if measure else None,
                       embedder=report_embedder(cfg.track.embedder, cfg.detect.device) if measure else None,
                       measured=range(chunk.start, chunk.stop), on_final=encode)
        for done in written:
            done.result()
    durable_replace(tmp, segment)
    return {"frames": chunk.frames, "seconds": round(time.perf_counter() - began, 3),
            "tracks": {track_id: own_frames(entry, chunk) for track_id, entry in stats.items()}}


def own_frames(entry: Any, chunk: Chunk) -> dict[str, list]:
    """A track's report numbers from one chunk, its frames limited to the chunk's own (context frames
    belong to the neighbouring chunks and are counted there)."""
    from dataclasses import asdict

    data = asdict(entry)
    data["frames"] = [f for f in data["frames"] if chunk.start <= f < chunk.stop]
    return data


class LocalExecutor:
    """Runs the stages one chunk after another in this process: for debugging and small jobs."""

    def __init__(self, cfg: Any, make_restorer: RestorerFactory):
        self.cfg = cfg
        self.make_restorer = make_restorer
        self.restorer: Any = None

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restorer = None

    def detect(self, path: str, chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, Any]]:
        for chunk in chunks:
            yield chunk, _named(chunk, "detect", detect_stage, path, chunk, self.cfg)

    def render(self, path: str, chunks: Iterable[Chunk], info: Any, trackset: Any, refs: Any,
               segment_for: Callable[[Chunk], Path]) -> Iterator[tuple[Chunk, dict]]:
        for chunk in chunks:
            if self.restorer is None:  # only when some chunk needs it: a model load can take long
                self.restorer = self.make_restorer()
            yield chunk, _named(chunk, "restore", render_stage, path, chunk, info, trackset, refs, self.restorer,
                                self.cfg, segment_for(chunk))


def _named(chunk: Chunk, stage: str, fn: Callable, *args: Any) -> Any:
    """Run one chunk's stage; a failure names the chunk (the traceback stays chained for debugging)."""
    try:
        return fn(*args)
    except Exception as exc:
        raise chunk_failed(chunk, stage, exc) from exc
