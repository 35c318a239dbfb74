"""The whole `reelface restore` (CPU, local executor) against the identity pass, in one run, per stage.

    python benchmarks/end_to_end.py [--clip hamilton|generated] [--repeats 3] [--frames 60] [--set KEY=VALUE]

For each clip, the identity restorer (the pure video path: decode, encode, assemble; no detection) and
the default preset (`restore.restorer=fusion` unless --set says otherwise) run back to back, alternating,
`--repeats` times each in this process; the ratio is median(default) / median(identity), so a machine
shared with other work slows both sides alike. Clips: ../shared/data/clips/hamilton.mp4, and a generated
1920x1080 clip with 4 faces (pipeline.synth: photos from ../shared/data/refs moving over a smooth
background, two of them crossing, a hard cut; `--frames` long).

Prints one JSON line per pass (wall seconds per stage, CPU seconds of the whole process, the 1-minute
load average before and after) and one per clip with the medians, frames/s and the ratios: of wall
time, and of CPU time (all threads), which a machine busy with other work disturbs much less. Stage seconds are wall time spent inside each
stage's functions; `faces` (pipeline.process: align, restorer, stabilise, blend, paste, report numbers)
is split into `restorer`, `stabilise`, `report_identity` (the report's identity embeddings) and the rest;
`render` is what a chunk's render stage spends outside `faces` (decode, encode).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
# benchmarks/tracking.py would shadow the tracking package when run as a script from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

STAGES = ("detect", "tracks", "references", "faces", "restorer", "stabilise", "report_identity", "render",
          "assemble", "report")


class StageTimer:
    """Wall seconds spent inside wrapped functions, per stage (thread-safe: stages may run in threads)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()

    def wrap(self, owner, attribute: str, stage: str) -> None:
        function = getattr(owner, attribute)

        @functools.wraps(function)
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds[stage] += time.perf_counter() - began
        setattr(owner, attribute, timed)

    def take(self) -> dict[str, float]:
        with self.lock:
            taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken


def instrument() -> StageTimer:
    from pipeline import mux, process, report, run, stages

    timer = StageTimer()
    timer.wrap(stages, "detect_stage", "detect")
    timer.wrap(run, "tracks_stage", "tracks")
    timer.wrap(run, "references_stage", "references")
    timer.wrap(stages, "render_stage", "render_total")
    timer.wrap(process, "restore_frames", "faces")
    timer.wrap(process, "restore_run", "restorer")
    timer.wrap(process, "stabilise", "stabilise")
    timer.wrap(process, "identity_similarities", "report_identity")
    timer.wrap(mux, "assemble", "assemble")
    timer.wrap(report, "write_report", "report")
    return timer


def generated_clip(folder: Path, frames: int) -> Path:
    """1920x1080, 4 people from refs/ (faces ~330 px wide), two crossing, a hard cut at 60%."""
    import cv2
    import numpy as np

    from pipeline import synth
    from pipeline.config import load_config
    from tracking.detectors import get_detector

    size = (1920, 1080)
    detector = get_detector(load_config("default", ["detect.device=cpu"]))
    faces = {}
    for fid, person in enumerate(["obama", "biden", "kit_harington", "rose_leslie"]):
        photo = cv2.cvtColor(cv2.imread(str(sorted((DATA / "refs" / person).glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
        face = max(detector.detect([photo])[0], key=lambda f: f.size)
        cx, cy = (face.box[:2] + face.box[2:]) / 2
        half = int(0.65 * max(face.box[2:] - face.box[:2]))
        padded = cv2.copyMakeBorder(photo, half, half, half, half, cv2.BORDER_REFLECT101)
        faces[fid] = padded[int(cy):int(cy) + 2 * half, int(cx):int(cx) + 2 * half]
    cut = int(frames * 0.6)
    rng = np.random.default_rng(0)
    backgrounds = [cv2.resize(rng.integers(30, 220, (4, 5, 3)).astype(np.uint8), size, interpolation=cv2.INTER_CUBIC)
                   for _ in range(2)]
    clip, _, _ = synth.compose_faces(backgrounds, [cut], faces, synth.crossing_paths(frames, size, 4, cut, seed=2))
    return synth.write_clip(folder / "faces_1080p.mp4", clip, synth.ClipSpec(options={"preset": "veryfast", "crf": "18"}))


def one_pass(clip: Path, overrides: list[str], timer: StageTimer, folder: Path) -> dict:
    from pipeline import crop_flow, run
    from pipeline.config import load_config

    cfg = load_config("default", ["run.executor=local", *overrides])
    # every pass starts cold, as a restore in a new process does: the flow cache is keyed by the crops'
    # content and would otherwise hand a repeated pass the flows of the previous one
    crop_flow._cache = crop_flow._FlowCache(crop_flow.CACHE_BYTES)
    load_before = os.getloadavg()[0]
    timer.take()
    began, cpu_began = time.perf_counter(), time.process_time()
    run.restore(clip, folder / "out.mp4", cfg, overwrite=True)
    total, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    seconds = timer.take()
    seconds["render"] = seconds.pop("render_total", 0.0) - seconds.get("faces", 0.0)
    return {"seconds": round(total, 2), "cpu_s": round(cpu, 2), "stages": {s: round(seconds.get(s, 0.0), 2) for s in STAGES},
            "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", action="append", choices=["hamilton", "generated"],
                        help="clips to measure (repeatable; default both)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=60, help="frames of the generated clip")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override for the default pass (KEY=VALUE)")
    args = parser.parse_args()

    import torch

    from pipeline.video import probe

    timer = instrument()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, no GPU"
    passes = {"identity": ["restore.restorer=identity"], "default": args.overrides}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {"hamilton": DATA / "clips" / "hamilton.mp4"}
        if "generated" in (args.clip or ["generated"]):
            clips["generated"] = generated_clip(tmp, args.frames)
        for name in args.clip or ["hamilton", "generated"]:
            clip = clips[name]
            frames = probe(clip).frame_count
            results: dict[str, list[dict]] = {"identity": [], "default": []}
            for repeat in range(args.repeats):
                for kind, overrides in passes.items():
                    result = one_pass(clip, overrides, timer, tmp)
                    results[kind].append(result)
                    print(json.dumps({"benchmark": "end_to_end", "clip": clip.name, "frames": frames, "pass": kind,
                                      "repeat": repeat, "overrides": overrides, **result}), flush=True)
            median = {kind: statistics.median(r["seconds"] for r in runs) for kind, runs in results.items()}
            cpu = {kind: round(statistics.median(r["cpu_s"] for r in runs), 2) for kind, runs in results.items()}
            stages = {s: round(statistics.median(r["stages"][s] for r in results["default"]), 2) for s in STAGES}
            print(json.dumps({
                "benchmark": "end_to_end", "clip": clip.name, "frames": frames, "repeats": args.repeats,
                "overrides": args.overrides,
                "identity_s": median["identity"], "default_s": median["default"],
                "ratio_default_to_identity": round(median["default"] / median["identity"], 2),
                "identity_cpu_s": cpu["identity"], "default_cpu_s": cpu["default"],
                "cpu_ratio_default_to_identity": round(cpu["default"] / cpu["identity"], 2),
                "default_frames_per_s": round(frames / median["default"], 2),
                "identity_frames_per_s": round(frames / median["identity"], 2),
                "default_stage_s": stages,
                "load_1min": [x for kind in results.values() for r in kind for x in r["load_1min"]],
                "machine": machine}), flush=True)


if __name__ == "__main__":
    main()
