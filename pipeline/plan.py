"""The chunk plan of a run: which frames each chunk owns and which it decodes for context.

Pure Python on purpose (no Ray, no video libraries): every executor plans with it.

A chunk owns the frames [start, stop) and lasts at most `run.chunk_seconds` (a short tail joins the
chunk before it), whatever the GOP: a cut falls on a keyframe when one is near enough, else between
keyframes, where decoding starts at the keyframe before (a pre-roll that is decoded and dropped) and the
chunk's segment starts with a keyframe of its own. So a chunk's memory follows its length, also for a
source with one keyframe. Temporal stages (multi-frame restorers, mask smoothing) also see a few context
frames on each side, [context_start, context_stop), and only the owned frames are written.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Sequence

from .errors import ReelfaceError

TIME_EPSILON = 1e-9  # seconds: pts converted to float must not move a frame across a bound


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first owned frame
    stop: int  # one past the last owned frame
    context_start: int  # first frame decoded (temporal context before `start`)
    context_stop: int  # one past the last frame decoded

    @property
    def name(self) -> str:
        return f"chunk-{self.index:04d}"

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def describe(self) -> str:
        return f"{self.name} (frames {self.start}..{self.stop - 1})"

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> "Chunk":
        return cls(**data)


def plan_chunks(
    frame_count: int,
    keyframes: Sequence[int],
    pts: Sequence[int],
    time_base: Fraction,
    chunk_seconds: float,
    context_frames: int = 0,
) -> list[Chunk]:
    """Split frames [0, frame_count) into chunks of at most `chunk_seconds`.

    A chunk ends at the latest keyframe that leaves it at least half of `chunk_seconds` and at most the
    whole; when the GOP is longer than that, it ends at the first frame `chunk_seconds` after its start
    (the next chunk then starts between keyframes). A short tail joins the chunk before it. Times come
    from the frames' pts, so VFR video is cut by time, not by frame count.
    """
    if frame_count <= 0:
        raise ReelfaceError("the video has no frames to restore")
    if chunk_seconds <= 0:
        raise ReelfaceError(f"run.chunk_seconds must be > 0 (got {chunk_seconds})")
    if context_frames < 0:
        raise ReelfaceError(f"run.context_frames must be >= 0 (got {context_frames})")
    if len(pts) < frame_count:
        raise ReelfaceError(f"probe gave {len(pts)} timestamps for {frame_count} frames: the file looks damaged")
    times = [float((p - pts[0]) * time_base) for p in pts[:frame_count]]
    keys = sorted({k for k in keyframes if 0 < k < frame_count})
    key_times = [times[k] for k in keys]
    half = chunk_seconds / 2
    starts = [0]
    while times[-1] - times[starts[-1]] >= chunk_seconds:
        begin = times[starts[-1]]
        lo = bisect.bisect_left(key_times, begin + half)
        hi = bisect.bisect_right(key_times, begin + chunk_seconds + TIME_EPSILON)
        if hi > lo:
            starts.append(keys[hi - 1])
        else:
            starts.append(bisect.bisect_left(times, begin + chunk_seconds - TIME_EPSILON, lo=starts[-1] + 1))
    if len(starts) > 1 and times[-1] - times[starts[-1]] < half:
        starts.pop()  # a short tail joins the chunk before it
    stops = starts[1:] + [frame_count]
    return [
        Chunk(
            index=i,
            start=start,
            stop=stop,
            context_start=max(0, start - context_frames),
            context_stop=min(frame_count, stop + context_frames),
        )
        for i, (start, stop) in enumerate(zip(starts, stops))
    ]


def chunk_failed(chunk: Chunk, stage: str, cause: BaseException) -> ReelfaceError:
    """The error that ends a run when one chunk cannot be done: which chunk, which stage, and why."""
    if isinstance(cause, ReelfaceError):
        why = str(cause)
    else:
        lines = [line for line in str(cause).strip().splitlines() if line.strip()]
        why = f"{type(cause).__name__}: {lines[0] if lines else 'no message'}"
    return ReelfaceError(f"{chunk.describe()} failed in the {stage} stage: {why}")
