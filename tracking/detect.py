"""Per-chunk detection: faces (with embeddings on some frames) and shot-cut scores, in one decode.

`detect_chunk` is what a worker runs on one chunk; its result is small and picklable, and
`tracking.build.build_tracks` joins the chunks on the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from pipeline.errors import ReelfaceError

from .detectors import get_detector
from .embedders import get_embedder, recognisable
from .faces import Face
from .shots import ShotScorer, thumbnail

BATCH_FRAMES = 8  # frames per detector call (one ONNX batch)


@dataclass
class ChunkDetections:
    start: int
    stop: int
    faces: list[list[Face]]  # per frame of [start, stop); empty where detection did not run
    detected: np.ndarray  # (stop - start,) bool: detection ran on that frame (stride)
    shot_scores: np.ndarray  # (stop - start,) ContentDetector score against the previous frame; [0] is NaN
    first_thumbnail: np.ndarray  # scored against the previous chunk's last thumbnail on the driver
    last_thumbnail: np.ndarray

    def __len__(self) -> int:
        return self.stop - self.start


def is_detection_frame(index: int, cfg) -> bool:
    # by absolute index, so the frames detected do not depend on how the video was chunked
    return index % max(1, cfg.detect.stride) == 0


def is_embedding_frame(index: int, cfg) -> bool:
    return index % (max(1, cfg.detect.stride) * max(1, cfg.track.embed_every)) == 0


_MODELS: dict[str, tuple] = {}


def models_for(cfg):
    """Detector and embedder for this config, built once per process (a Ray worker reuses them)."""
    key = cfg.digest("detect", "track")
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = (get_detector(cfg), get_embedder(cfg))
    return _MODELS[key]


def decode_rgb(path, start: int, stop: int | None) -> Iterator[tuple[int, np.ndarray]]:
    from pipeline.video import decode

    for frame in decode(path, start, stop):
        yield frame.index, frame.rgb


def detect_chunk(path, start: int, stop: int, cfg, on_frame: Callable[[], None] | None = None) -> ChunkDetections:
    """Detect faces in frames [start, stop) of `path` and score them for shot cuts. `on_frame` is called
    once per decoded frame (progress bars)."""
    detector, embedder = models_for(cfg)
    scorer = ShotScorer()
    n = stop - start
    faces: list[list[Face]] = [[] for _ in range(n)]
    detected = np.zeros(n, bool)
    scores = np.full(n, np.nan)
    first = last = None
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        for (index, rgb), found in zip(pending, detector.detect([rgb for _, rgb in pending])):
            if found and is_embedding_frame(index, cfg):
                good = [face for face in found if recognisable(rgb, face, found)]
                for face, vector in zip(good, embedder.embed(rgb, good)):
                    face.embedding = vector
            faces[index - start] = found
            detected[index - start] = True
        pending.clear()

    for index, rgb in decode_rgb(path, start, stop):
        thumb = thumbnail(rgb)
        scores[index - start] = scorer.score(thumb)
        first = thumb if first is None else first
        last = thumb
        if is_detection_frame(index, cfg):
            pending.append((index, rgb))
            if len(pending) == BATCH_FRAMES:
                flush()
        if on_frame is not None:
            on_frame()
    flush()
    if first is None:
        raise ReelfaceError(f"no frames decoded in {path} between {start} and {stop}: is the file truncated?")
    return ChunkDetections(start, stop, faces, detected, scores, first, last)
