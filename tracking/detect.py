"""Per-chunk detection: faces (with embeddings on some frames) and shot-cut scores, in one decode.

`detect_chunk` is what a worker runs on one chunk; its result is small and picklable, and
`tracking.build.build_tracks` joins the chunks on the driver.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from pipeline.errors import ReelfaceError

from .detectors import get_detector, resized, scan_scale
from .embedders import get_embedder, same_person_threshold
from .faces import Face
from .follow import Follower
from .regions import search_regions
from .shots import ShotScorer, thumbnail

DECODE_AHEAD = 4  # frames decoded ahead of detection (one 1080p RGB frame is 6 MB)


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


_MODELS: dict[str, tuple] = {}


def models_for(cfg):
    """Detector and embedder for this config, built once per process (a Ray worker reuses them)."""
    key = cfg.digest("detect", "track")
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = (get_detector(cfg), get_embedder(cfg))
    return _MODELS[key]


@dataclass
class DecodedFrame:
    index: int
    rgb: np.ndarray
    thumbnail: np.ndarray
    shot_score: float  # against the previous frame of the chunk; NaN for the first
    cut: bool  # the shot score passes the cut threshold: nothing before it is expected after it
    scale: float  # of `image` to `rgb`
    image: np.ndarray | None  # what the detector sees (downscaled to detect.scan_size) on detection frames


def decoded_frames(path, start: int, stop: int, cfg) -> Iterator[DecodedFrame]:
    """Decode, shot-score and downscale: the per-frame work that needs no model."""
    from pipeline.video import decode

    scorer = ShotScorer()
    for frame in decode(path, start, stop):
        rgb = frame.rgb
        thumb = thumbnail(rgb)
        score = scorer.score(thumb)
        scale = scan_scale(rgb.shape, cfg.detect.scan_size)
        image = resized(rgb, scale) if is_detection_frame(frame.index, cfg) else None
        # NaN (the chunk's first frame) is no cut
        yield DecodedFrame(frame.index, rgb, thumb, score, score >= cfg.track.shot_threshold, scale, image)


T = TypeVar("T")


def prefetch(items: Iterable[T], ahead: int) -> Iterator[T]:
    """`items` produced by a background thread up to `ahead` in advance, so decoding (FFmpeg, swscale,
    OpenCV: all release the GIL) runs on one core while the models run on the other."""
    buffer: queue.Queue = queue.Queue(maxsize=ahead)
    end, stop = object(), threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if stop.is_set():
                    break
                buffer.put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            failure.append(exc)
        finally:
            getattr(iterator, "close", lambda: None)()
            buffer.put(end)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not end:
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get(timeout=0.05)
            except queue.Empty:
                pass


def detect_chunk(path, start: int, stop: int, cfg, on_frame: Callable[[], None] | None = None) -> ChunkDetections:
    """Detect faces in frames [start, stop) of `path` and score them for shot cuts. `on_frame` is called
    once per decoded frame (progress bars).

    Frames are detected downscaled to `detect.scan_size` (decoded and downscaled in a second thread):
    the whole frame every `detect.scan_every` frames and at every possible shot cut, in between only
    around the faces already followed, where their Kalman filters expect them (so a new face elsewhere
    starts at the next whole scan). Faces get an embedding only when their tracklet needs one
    (`Follower.wants_embedding`).
    """
    detector, embedder = models_for(cfg)
    follower = Follower(cfg.track, same_person_threshold(cfg), cfg.track.bridge_gap, cfg.detect.stride,
                        cfg.track.max_gap)
    n = stop - start
    faces: list[list[Face]] = [[] for _ in range(n)]
    detected = np.zeros(n, bool)
    scores = np.full(n, np.nan)
    first = last = None
    last_whole = None  # frame of the last whole-frame scan
    for frame in prefetch(decoded_frames(path, start, stop, cfg), DECODE_AHEAD):
        k = frame.index - start
        scores[k] = frame.shot_score
        first = frame.thumbnail if first is None else first
        last = frame.thumbnail
        if frame.cut:  # also between two detected frames (stride)
            follower.clear()
            last_whole = None  # the new shot's first detected frame is scanned whole
        if frame.image is not None:
            whole = last_whole is None or frame.index - last_whole >= cfg.detect.scan_every
            regions = None if whole else search_regions(follower.expected(frame.index), frame.image.shape, frame.scale)
            if regions is None:
                last_whole = frame.index
            found = detector.detect_scaled(frame.rgb, frame.image, frame.scale, regions)
            owners, unsure = follower.follow(frame.index, found)
            follower.embed(frame.index, frame.rgb, found, owners, unsure, embedder)
            follower.record(frame.index, found, owners)
            faces[k], detected[k] = found, True
        if on_frame is not None:
            on_frame()
    if first is None:
        raise ReelfaceError(f"no frames decoded in {path} between {start} and {stop}: is the file truncated?")
    return ChunkDetections(start, stop, faces, detected, scores, first, last)
