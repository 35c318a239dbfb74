"""Frames/s of detect + track (tracking.detect.detect_chunk + tracking.build.build_tracks) on CPU.

Prints one JSON line per measurement. 360p: the first frames of ../shared/data/clips/hamilton.mp4 as
they are; 1080p: the same frames upscaled (bicubic) and re-encoded, so the content (faces, cuts) is the
same. Each configuration is measured with the default preset (stride 1) and `fast` (stride 3).

    python benchmarks/tracking.py [--frames 120] [--presets default,fast]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# run as a script, this file's folder is first on sys.path and this file's name would shadow the
# `tracking` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import cv2  # noqa: E402

from pipeline import synth  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.video import decode  # noqa: E402
from tracking.build import build_tracks  # noqa: E402
from tracking.detect import detect_chunk, models_for  # noqa: E402

CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "clips" / "hamilton.mp4"


def measure(path: Path, frames: int, preset: str, label: str) -> dict:
    cfg = load_config(preset, ["detect.device=cpu"])
    models_for(cfg)  # model loading is not per-frame work
    began, cpu_began = time.perf_counter(), time.process_time()
    detections = detect_chunk(path, 0, frames, cfg)
    detected = time.perf_counter()
    trackset = build_tracks([detections], frames, cfg)
    done, cpu_done = time.perf_counter(), time.process_time()
    faces = sum(len(f) for f in detections.faces)
    return {
        "benchmark": "tracking", "resolution": label, "preset": preset, "stride": cfg.detect.stride,
        "frames": frames, "faces_detected": faces, "tracks": len(trackset.tracks), "cuts": len(trackset.cuts),
        "detect_s": round(detected - began, 2), "track_s": round(done - detected, 3),
        "fps": round(frames / (done - began), 2),
        # CPU seconds of all this process's threads: steadier than wall time on a shared machine
        "cpu_s": round(cpu_done - cpu_began, 2),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--presets", default="default,fast")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upscaled = [cv2.resize(f.rgb, (1920, 1080), interpolation=cv2.INTER_CUBIC)
                    for f in decode(CLIP, 0, args.frames)]
        clip_1080 = synth.write_clip(Path(tmp) / "hamilton_1080p.mp4", upscaled)
        del upscaled
        for preset in args.presets.split(","):
            print(json.dumps(measure(CLIP, args.frames, preset, "640x360")), flush=True)
            print(json.dumps(measure(clip_1080, args.frames, preset, "1920x1080")), flush=True)


if __name__ == "__main__":
    main()
