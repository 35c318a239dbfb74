"""Chunk plan on keyframes and the resumable manifest of a run.

Pure Python on purpose (no Ray, no video libraries): the local executor plans and resumes with it too.

A chunk owns the frames [start, stop) and starts on a keyframe, so it decodes on its own without
decoding the previous GOP. Temporal stages (multi-frame restorers, mask smoothing) also see a few
context frames on each side, [context_start, context_stop), and only the owned frames are written.

The manifest (manifest.json in the work dir) records the input's identity, the plan, one config digest
per stage and each stage's finished chunks. It is rewritten atomically (temp file + os.replace) after
every finished chunk, so a run killed at any moment leaves a manifest that names only finished work.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence

from pipeline.errors import ReelfaceError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

# Stages in pipeline order with the config sections each one's result depends on. A stage is redone
# when its digest changes, and so is every stage after it (each one consumes the previous results).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "detect": ("detect",),
    "tracks": ("detect", "track"),
    "references": ("detect", "track", "references"),
    "restore": ("detect", "track", "references", "restore", "blend", "encode"),
}


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first owned frame (a keyframe)
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
    """Split frames [0, frame_count) at keyframes into chunks of about `chunk_seconds`.

    Each cut is the keyframe nearest to `chunk_seconds` after the chunk's start, but a chunk is never
    shorter than half of that unless the video has no later keyframe; a short tail joins the chunk
    before it. Times come from the frames' pts, so VFR video is cut by time, not by frame count.
    """
    if frame_count <= 0:
        raise ReelfaceError("the video has no frames to restore")
    if chunk_seconds <= 0:
        raise ReelfaceError(f"run.chunk_seconds must be > 0 (got {chunk_seconds})")
    if context_frames < 0:
        raise ReelfaceError(f"run.context_frames must be >= 0 (got {context_frames})")
    if len(pts) < frame_count:
        raise ReelfaceError(f"probe gave {len(pts)} timestamps for {frame_count} frames: the file looks damaged")
    origin = pts[0]

    def seconds(index: int) -> float:
        return float((pts[index] - origin) * time_base)

    cuts = sorted({k for k in keyframes if 0 < k < frame_count})
    cut_times = [seconds(k) for k in cuts]
    half = chunk_seconds / 2
    starts = [0]
    while True:
        begin = seconds(starts[-1])
        first = bisect.bisect_left(cut_times, begin + half)  # cuts giving a chunk of at least half
        if first == len(cuts):
            break
        target = begin + chunk_seconds
        after = bisect.bisect_left(cut_times, target, lo=first)  # first cut at or past the target
        if after == len(cuts):
            pick = len(cuts) - 1
        elif after > first and target - cut_times[after - 1] < cut_times[after] - target:
            pick = after - 1  # the cut just before the target is nearer
        else:
            pick = after
        starts.append(cuts[pick])
    if len(starts) > 1 and seconds(frame_count - 1) - seconds(starts[-1]) < half:
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


def input_identity(path: str | Path) -> dict[str, Any]:
    """What tells a resumed run that the input is still the same file: size and modification time
    (hashing a multi-gigabyte master on every start would cost minutes)."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def stage_digests(cfg: Any) -> dict[str, str]:
    """One digest per stage over the config sections that stage depends on (`Config.digest`)."""
    return {stage: cfg.digest(*sections) for stage, sections in STAGE_SECTIONS.items()}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Manifest:
    """The work dir's record of a run: plan, digests and finished chunks per stage.

    Only the driver writes it; workers return results and the driver marks them finished.
    """

    def __init__(self, work_dir: Path, data: dict[str, Any]):
        self.work_dir = work_dir
        self.path = work_dir / MANIFEST_NAME
        self.data = data

    @classmethod
    def open(
        cls,
        work_dir: str | Path,
        *,
        identity: dict[str, Any],
        plan: list[Chunk],
        digests: dict[str, str],
    ) -> tuple["Manifest", list[str]]:
        """Load the work dir's manifest and keep what still matches, or start a new one.

        Returns the manifest and notes for the user saying what was kept and what is redone and why.
        A different input or plan starts over; a changed config redoes the stages it affects.
        """
        work_dir = Path(work_dir)
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReelfaceError(f"cannot create the work dir {work_dir}: {exc}; choose another with --work-dir") from None
        fresh = {
            "version": MANIFEST_VERSION,
            "input": identity,
            "plan": [c.to_dict() for c in plan],
            "digests": digests,
            "stages": {stage: {} for stage in STAGE_SECTIONS},
            "runs": 0,
        }
        notes: list[str] = []
        old = cls._read(work_dir / MANIFEST_NAME, notes)
        data = fresh
        if old is not None:
            reason = cls._mismatch(old, fresh)
            if reason:
                notes.append(f"work dir {work_dir}: {reason}; starting over")
            else:
                data = old
                stale = False
                for stage in STAGE_SECTIONS:
                    stale = stale or old["digests"].get(stage) != digests[stage]
                    if stale and old["stages"].get(stage):
                        notes.append(f"work dir {work_dir}: config of the {stage} stage changed "
                                     f"(sections {', '.join(STAGE_SECTIONS[stage])}); redoing it")
                        data["stages"][stage] = {}
                    data["stages"].setdefault(stage, {})
                data["digests"] = digests
                kept = {s: len(v) for s, v in data["stages"].items() if v}
                if kept:
                    notes.append(f"resuming from {work_dir}: finished so far "
                                 + ", ".join(f"{s} {n}" for s, n in kept.items()))
        data["runs"] += 1
        manifest = cls(work_dir, data)
        manifest.save()
        return manifest, notes

    @staticmethod
    def _read(path: Path, notes: list[str]) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
                raise ValueError("unknown manifest version")
            return data
        except (OSError, ValueError) as exc:
            notes.append(f"{path} is unreadable ({exc}); starting over")
            return None

    @staticmethod
    def _mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
        was, now = old.get("input", {}), new["input"]
        if (was.get("size"), was.get("mtime_ns")) != (now["size"], now["mtime_ns"]):
            return f"the input changed since the last run ({was.get('path')}, size/mtime differ)"
        if old.get("plan") != new["plan"]:
            return "the chunk plan changed (run.chunk_seconds, run.context_frames or the preview length)"
        return None

    @property
    def run(self) -> int:
        """How many times this work dir was opened: 1 on the first run, 2 on the first resume..."""
        return self.data["runs"]

    @property
    def plan(self) -> list[Chunk]:
        return [Chunk.from_dict(c) for c in self.data["plan"]]

    def record(self, stage: str, name: str) -> dict[str, Any] | None:
        return self.data["stages"][stage].get(name)

    def is_done(self, stage: str, name: str) -> bool:
        """Finished, and its result file (if it has one) is still there."""
        entry = self.record(stage, name)
        if entry is None:
            return False
        file = entry.get("file")
        return file is None or (self.work_dir / file).exists()

    def finished_anything(self) -> bool:
        return any(self.data["stages"].values())

    def pending(self, stage: str, chunks: Iterable[Chunk]) -> list[Chunk]:
        return [c for c in chunks if not self.is_done(stage, c.name)]

    def mark(self, stage: str, name: str, file: Path | str | None = None, **info: Any) -> None:
        """Record `name` (a chunk, or a stage-wide result such as "all") as finished and save."""
        entry: dict[str, Any] = {"run": self.run, "finished_at": round(time.time(), 3), **info}
        if file is not None:
            entry["file"] = str(Path(file).relative_to(self.work_dir)) if Path(file).is_absolute() else str(file)
        self.data["stages"][stage][name] = entry
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)
