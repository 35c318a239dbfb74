"""Soak: a feature-length run's memory and bookkeeping do not grow with the video.

    python benchmarks/soak.py                          # 20-minute clip (GOP 25 s), then 5-minute one-keyframe clip
    python benchmarks/soak.py --minutes 3 --single-keyframe-minutes 1   # a quick look

Each clip is generated (streamed, never held): scenes of 6-12 s, each a new 320x180 textured background
(a shot cut), where people come and go, one or two at a time, each for 2-5 s and at most once a scene
(faces from ../shared/data/faces, ~72 px): hundreds of short tracks over 20 minutes, 5 fps by default. `pipeline.run.restore` runs on it in this process with the
local executor and a cheap restorer (darkens the crop: no model), default detection (stride 3),
tracking and references, and the cheap end of blending (no temporal smoothing, no colour match) and
no report. A sampler thread reads this process's RSS every 20 ms; every finished chunk of the detect and
restore stages records the largest RSS seen while it ran and the time its manifest record took.

Prints per clip and stage: peak RSS of the chunks at 2, 10 and 20 minutes (or the clip's 10 %, 50 %,
100 % for shorter clips) and their max/min ratio (target <= 1.2), the mean manifest write time of
the first and last tenth of the chunks and their ratio (flat: ~1), and the run's totals. Then what the
pre-rolls cost: a chunk that starts between keyframes is decoded from the keyframe before it (frame 0
in a one-keyframe clip, so the pre-rolls of a whole run add up to the square of its length); each
chunk's frames are decoded again as the render stage decodes them, and once straight through.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import synth  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.manifest import Manifest  # noqa: E402
from pipeline.plan import Chunk  # noqa: E402
from pipeline.run import restore  # noqa: E402
from pipeline.video import decode, probe  # noqa: E402

FACES = REPO.parent / "shared" / "data" / "faces"
SIZE = (320, 180)
FACE_PX = 72


class Darken:
    """The cheap restorer: per crop, deterministic, visible, no model."""

    name, temporal_radius = "darken", 0

    def restore(self, crops, refs=None):
        return crops * 0.8


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sampler(threading.Thread):
    """The largest RSS since the last `take()`."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def take(self) -> int:
        peak, self.peak = self.peak, rss_bytes()
        return max(peak, self.peak)


def face_patches() -> list[tuple[np.ndarray, np.ndarray]]:
    """Each face photo at FACE_PX with a soft elliptical mask."""
    patches = []
    yy, xx = np.mgrid[0:FACE_PX, 0:FACE_PX] / (FACE_PX - 1) * 2 - 1
    mask = np.clip((1 - (xx ** 2 / 0.8 + yy ** 2 / 0.95)) * 4, 0, 1)[..., None].astype(np.float32)
    for path in sorted(FACES.glob("*.png")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        patches.append((cv2.resize(rgb, (FACE_PX, FACE_PX), interpolation=cv2.INTER_AREA).astype(np.float32), mask))
    return patches


def scenes(frames: int, fps: int, seed: int) -> list[int]:
    """First frames of the clip's scenes: a new background every 6-12 s (a shot cut: tracks end there)."""
    rng = np.random.default_rng(seed + 1)
    starts = [0]
    while starts[-1] < frames:
        starts.append(starts[-1] + int(rng.integers(6 * fps, 12 * fps)))
    return starts[:-1]


def schedule(frames: int, fps: int, seed: int) -> list[tuple[int, int, int, float, float, float, float]]:
    """Appearances (first frame, last frame, face, x0, y0, dx, dy): in each scene two slots (left and
    right half) show one person at a time for 2-5 s, then nobody for 0.5-2 s; nobody appears twice in
    a scene, so every appearance is a track of its own (hundreds over 20 minutes)."""
    rng = np.random.default_rng(seed)
    bounds = [*scenes(frames, fps, seed), frames]
    shows = []
    for lo, hi in zip(bounds, bounds[1:]):
        faces = list(rng.permutation(5))  # the scene's cast: each face at most once
        for slot in (0, 1):
            t = lo + int(rng.integers(0, fps))
            while faces and t + 2 * fps <= hi:
                length = min(int(rng.integers(2 * fps, 5 * fps)), hi - t)
                x0 = SIZE[0] * (0.12 + 0.5 * slot) + rng.uniform(0, SIZE[0] * 0.18)
                y0 = rng.uniform(0.05, 0.55) * SIZE[1]
                shows.append((t, t + length, int(faces.pop()), x0, y0, rng.uniform(-1, 1), rng.uniform(-0.5, 0.5)))
                t += length + int(rng.integers(fps // 2, 2 * fps))
    return shows


def clip_frames(frames: int, fps: int, seed: int):
    """The clip, one frame at a time (constant memory whatever its length)."""
    rng = np.random.default_rng(seed)
    cuts = set(scenes(frames, fps, seed))
    patches = face_patches()
    shows = schedule(frames, fps, seed)
    background = None
    for index in range(frames):
        if index in cuts:
            background = cv2.resize((rng.random((9, 16, 3)) * 200 + 30).astype(np.uint8), SIZE,
                                    interpolation=cv2.INTER_CUBIC)
        frame = background.astype(np.float32)
        for first, last, face, x0, y0, dx, dy in shows:
            if first <= index < last:
                x, y = int(x0 + dx * (index - first)), int(y0 + dy * (index - first))
                x, y = min(max(x, 0), SIZE[0] - FACE_PX), min(max(y, 0), SIZE[1] - FACE_PX)
                rgb, mask = patches[face]
                region = frame[y:y + FACE_PX, x:x + FACE_PX]
                region += mask * (rgb - region)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def soak(minutes: float, gop_seconds: float | None, folder: Path, chunk_seconds: float, fps: int, label: str,
         progress: bool = False) -> None:
    frames = int(minutes * 60 * fps)
    clip = folder / f"{label}.mp4"
    gop = str(int(gop_seconds * fps)) if gop_seconds else str(frames + 1)  # + 1: one keyframe only
    began = time.perf_counter()
    synth.write_clip(clip, clip_frames(frames, fps, seed=1), synth.ClipSpec(
        time_base=synth.Fraction(1, fps), options={"preset": "ultrafast", "crf": "20", "g": gop,
                                                   "keyint_min": gop, "sc_threshold": "0"}))
    made = time.perf_counter() - began
    tracks_shown = len(schedule(frames, fps, seed=1))

    sampler = Sampler()
    sampler.start()
    records: dict[str, list[tuple[int, float]]] = {"detect": [], "restore": []}  # per chunk: (peak RSS, write s)
    original_mark = Manifest.mark

    def timed_mark(self, stage, name, file=None, **info):
        began = time.perf_counter()
        original_mark(self, stage, name, file, **info)
        if stage in records:
            records[stage].append((sampler.take(), time.perf_counter() - began))
            if progress:  # a line per chunk, for runs too long to wait for the summary
                print(json.dumps({"benchmark": "soak.chunk", "clip": label, "stage": stage, "chunk": name,
                                  "rss_mb": round(records[stage][-1][0] / 2 ** 20, 1),
                                  "manifest_write_ms": round(1000 * records[stage][-1][1], 2)}), flush=True)

    Manifest.mark = timed_mark
    # the cheap end of every stage (what is measured is memory and bookkeeping, not quality): no temporal
    # smoothing or colour match of the crops, no report (its identity check runs dlib on every track)
    cfg = load_config("default", [f"run.chunk_seconds={chunk_seconds}", "run.context_frames=2", "detect.stride=3",
                                  "encode.codec=libx264", "encode.preset=ultrafast", "blend.temporal=0",
                                  "blend.color_match=false", "run.report=false", "run.keep_work_dir=true"])
    began = time.perf_counter()
    try:
        restore(clip, folder / f"{label}.out.mp4", cfg, make_restorer=Darken)
    finally:
        Manifest.mark = original_mark
        sampler.stop.set()
    wall = time.perf_counter() - began
    with open(folder / f"{label}.out.mp4.work" / "tracks.pkl", "rb") as f:
        tracks = len(pickle.load(f).tracks)
    marks = [60 * m for m in (2, 10, 20) if 60 * m <= minutes * 60] if minutes >= 20 else \
        [minutes * 60 * f for f in (0.1, 0.5, 1.0)]
    plan = json.loads((folder / f"{label}.out.mp4.work" / "manifest.json").read_text())["plan"]
    for stage, chunks in records.items():  # the chunk holding each mark (chunks may end early on a keyframe)
        at = [max(i for i, c in enumerate(plan) if c["start"] <= s * fps) for s in marks]
        peaks = [chunks[k][0] for k in at]
        tenth = max(1, len(chunks) // 10)
        first_write = float(np.mean([w for _, w in chunks[:tenth]]))
        last_write = float(np.mean([w for _, w in chunks[-tenth:]]))
        print(json.dumps({
            "benchmark": "soak", "clip": label, "stage": stage, "minutes": minutes, "frames": frames,
            "chunks": len(chunks), "chunk_seconds": chunk_seconds,
            "gop": "one keyframe" if not gop_seconds else f"{gop_seconds} s",
            "peak_rss_mb_at_s": {f"{s:g}": round(p / 2 ** 20, 1) for s, p in zip(marks, peaks)},
            "rss_ratio_max_min": round(max(peaks) / min(peaks), 3),
            "peak_rss_mb_any_chunk": round(max(p for p, _ in chunks) / 2 ** 20, 1),
            "manifest_write_ms_first_tenth": round(1000 * first_write, 2),
            "manifest_write_ms_last_tenth": round(1000 * last_write, 2),
            "manifest_write_ratio_last_first": round(last_write / first_write, 2),
            "machine": f"{platform.machine()} {len(os.sched_getaffinity(0))} cores, no GPU, shared",
        }), flush=True)
    print(json.dumps({"benchmark": "soak.preroll", "clip": label, **preroll_cost(clip, [Chunk.from_dict(c) for c in plan])}),
          flush=True)
    print(json.dumps({"benchmark": "soak.run", "clip": label, "minutes": minutes, "frames": frames,
                      "fps": fps, "scenes": len(scenes(frames, fps, seed=1)), "appearances_generated": tracks_shown, "tracks": tracks,
                      "restore_wall_s": round(wall, 1), "clip_write_s": round(made, 1),
                      "load_avg": os.getloadavg()[0]}), flush=True)
    shutil.rmtree(folder / f"{label}.out.mp4.work")
    for file in folder.glob(f"{label}*"):
        file.unlink()


def preroll_cost(clip: Path, plan: list[Chunk]) -> dict:
    """Seconds to decode every chunk's frames as the render stage does (each from the keyframe at or
    before its first frame), and the clip once straight through: the difference is what the pre-rolls
    cost one stage (detection decodes its chunks the same way)."""
    info = probe(clip)
    began = time.perf_counter()
    for chunk in plan:
        for _ in decode(clip, chunk.context_start, chunk.context_stop, info=info):
            pass
    chunks_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in decode(clip, 0, info=info):
        pass
    once_s = time.perf_counter() - began
    rolled = sum(c.context_start - max(k for k in info.keyframes if k <= c.context_start) for c in plan)
    return {"chunks": len(plan), "keyframes": len(info.keyframes), "frames": info.frame_count,
            "preroll_frames": rolled, "decode_chunks_s": round(chunks_s, 2), "decode_once_s": round(once_s, 2),
            "preroll_s": round(chunks_s - once_s, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--gop-seconds", type=float, default=25.0, help="keyframe interval of the long clip")
    p.add_argument("--single-keyframe-minutes", type=float, default=5.0, help="0: skip that clip")
    p.add_argument("--chunk-seconds", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=5, help="frame rate of the generated clips")
    p.add_argument("--progress", action="store_true", help="also print a line per finished chunk")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.minutes > 0:
            soak(args.minutes, args.gop_seconds, Path(tmp), args.chunk_seconds, args.fps, "long", args.progress)
        if args.single_keyframe_minutes > 0:
            soak(args.single_keyframe_minutes, None, Path(tmp), args.chunk_seconds, args.fps, "one-keyframe", args.progress)


if __name__ == "__main__":
    main()
