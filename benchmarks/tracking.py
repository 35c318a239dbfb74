"""Frames/s of detect + track (tracking.detect.detect_chunk + tracking.build.build_tracks) on CPU, this
checkout against a baseline commit in the same run, with CPU ms a frame per stage and IDF1.

Clips: the first frames of ../shared/data/clips/hamilton.mp4 as they are (640x360) and upscaled bicubic
to 1920x1080 (same faces and cuts); the generated multi-face clip of the tracking tests
(tests/tracking_clips.py: a crossing, an occlusion, a cut, ground truth) at its test size and at 1080p,
where IDF1 is measured too. Every measurement runs in a fresh process with the code of one checkout
(the baseline is `git archive`d into a temporary folder); model loading is excluded; baseline and
current alternate clip by clip. One JSON line per measurement, then one per clip with the ratios.

    python benchmarks/tracking.py [--frames 120] [--preset default] [--baseline main] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# run as a script, this file's folder is first on sys.path and this file's name would shadow the
# `tracking` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT.parent / "shared" / "data" / "clips" / "hamilton.mp4"
REFS = ROOT.parent / "shared" / "data" / "refs"


COMPUTED: list[int] = []  # faces per call of the embedding network


def timed_stages() -> dict[str, float]:
    """Wrap the stages of detection (in both the baseline's code and this one) to add up the CPU time
    of the thread that runs them: decode and the shot thumbnails may run on another thread than the
    models, so per-thread CPU time is what each stage costs, whatever else the machine is doing."""
    import pipeline.video
    import tracking.detect
    import tracking.detectors
    import tracking.embedders
    import tracking.shots

    spent: dict[str, float] = {}
    inside = threading.local()  # stages being timed on this thread: a stage calling its own parts counts once

    def timer(stage, function):
        def run(*args, **kwargs):
            stages = inside.__dict__.setdefault("stages", set())
            if stage in stages:
                return function(*args, **kwargs)
            stages.add(stage)
            began = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[stage] = spent.get(stage, 0.0) + time.thread_time() - began
                stages.discard(stage)
        return run

    def iterator_timer(stage, function):
        def run(*args, **kwargs):
            iterator = timer(stage, function)(*args, **kwargs)
            while True:
                try:
                    item = timer(stage, next)(iterator)
                except StopIteration:
                    return
                yield item
        return run

    pipeline.video.decode = iterator_timer("decode", pipeline.video.decode)
    pipeline.video.Frame.rgb = property(timer("decode", pipeline.video.Frame.rgb.fget))  # YUV -> RGB
    tracking.detectors.RetinaFaceDetector.detect = timer("detector", tracking.detectors.RetinaFaceDetector.detect)
    dlib = tracking.embedders.DlibEmbedder
    for step in ("embed", "align", "describe"):  # the baseline has only embed
        if hasattr(dlib, step):
            setattr(dlib, step, timer("embed", getattr(dlib, step)))
    # faces that went through dlib's network (the others reused an embedding, or had none)
    network = "describe" if hasattr(dlib, "describe") else "embed"
    counted = getattr(dlib, network)
    setattr(dlib, network, lambda self, *args: (COMPUTED.append(len(args[-1])), counted(self, *args))[1])
    tracking.shots.ShotScorer.score = timer("shots", tracking.shots.ShotScorer.score)
    tracking.detect.thumbnail = timer("shots", tracking.detect.thumbnail)
    return spent


def measure(path: Path, frames: int, preset: str, tracks_json: Path | None) -> dict:
    """Runs in the child process, with one checkout's packages on sys.path."""
    from pipeline.config import load_config
    from tracking.build import build_tracks
    from tracking.detect import detect_chunk, models_for

    cfg = load_config(preset, ["detect.device=cpu"])
    models_for(cfg)  # model loading is not per-frame work
    spent = timed_stages()
    began, cpu_began, main_began = time.perf_counter(), time.process_time(), time.thread_time()
    detections = detect_chunk(path, 0, frames, cfg)
    detected, main_cpu = time.perf_counter(), time.thread_time() - main_began
    track_cpu = time.process_time()
    trackset = build_tracks([detections], frames, cfg)
    done, cpu_done = time.perf_counter(), time.process_time()
    spent["track"] = cpu_done - track_cpu
    if tracks_json is not None:
        trackset.to_json(tracks_json)
    main_ms = 1000 * main_cpu / frames
    other_ms = 1000 * (cpu_done - cpu_began - main_cpu - spent["track"]) / frames
    return {
        "frames": frames, "faces_detected": sum(len(f) for f in detections.faces),
        "embeddings": sum(f.embedding is not None for faces in detections.faces for f in faces),
        "embeddings_computed": sum(COMPUTED),
        "tracks": len(trackset.tracks), "persons": len(trackset.person_ids), "cuts": trackset.cuts,
        "detect_s": round(detected - began, 2), "track_s": round(done - detected, 3),
        "fps": round(frames / (done - began), 2),
        # CPU seconds of all this process's threads: steadier than wall time on a shared machine
        "cpu_s": round(cpu_done - cpu_began, 2),
        "cpu_ms_per_frame": {k: round(1000 * v / frames, 1) for k, v in sorted(spent.items())},
        # detection's two sides: the thread that runs the models, and the rest (the decode thread,
        # FFmpeg's and ONNX Runtime's own threads); on an idle 2-core machine each gets a core, so
        # frames/s there is about 1000 / the larger of the two
        "main_thread_ms_per_frame": round(main_ms, 1),
        "other_threads_ms_per_frame": round(other_ms, 1),
        # frames/s the larger side allows on an idle 2-core machine (CPU times: the load changes them little)
        "idle_2core_fps_estimate": round(1000 / max(main_ms, other_ms), 1),
    }


def run_child(tree: Path, clip: Path, frames: int, preset: str, tracks_json: Path | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(clip), "--frames", str(frames),
               "--preset", preset] + (["--tracks-json", str(tracks_json)] if tracks_json else [])
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=tree).stdout
    return json.loads(out.strip().splitlines()[-1])


def export(ref: str, folder: Path) -> Path:
    """The packages of commit `ref` in `folder` (a plain copy, not a worktree)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "pipeline", "tracking", "configs"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def make_clips(folder: Path, frames: int):
    """(name, path, frames, ground truth or None) for each clip measured."""
    import cv2

    from pipeline import synth
    from pipeline.config import load_config
    from pipeline.video import decode
    from tracking.detectors import get_detector

    from tracking_clips import multi_face_clip

    upscaled = [cv2.resize(f.rgb, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in decode(CLIP, 0, frames)]
    clips = [("hamilton 640x360", CLIP, frames, None),
             ("hamilton 1920x1080", synth.write_clip(folder / "hamilton_1080p.mp4", upscaled), frames, None)]
    del upscaled
    detector = get_detector(load_config("default", ["detect.device=cpu"]))
    for size in ((384, 288), (1920, 1080)):
        sub = folder / f"faces_{size[1]}"
        sub.mkdir()
        clip = multi_face_clip(sub, REFS, detector, size=size)
        clips.append((f"generated faces {size[0]}x{size[1]}", clip.path, clip.n_frames, clip))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120, help="frames of hamilton.mp4")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--baseline", default="main", help="git commit to compare with ('' for none)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tracks-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.frames, args.preset, args.tracks_json)))
        return
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from tracking.faces import TrackSet
    from tracking_clips import idf1

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"current": ROOT}
        if args.baseline:
            (tmp / "baseline").mkdir()
            trees = {"baseline": export(args.baseline, tmp / "baseline"), "current": ROOT}
        for name, path, frames, truth in make_clips(tmp, args.frames):
            best: dict[str, dict] = {}
            for _ in range(args.repeats):
                for version, tree in trees.items():
                    tracks_json = tmp / f"{version}.json" if truth else None
                    result = run_child(tree, path, frames, args.preset, tracks_json)
                    if truth:
                        result["idf1"] = round(idf1(truth, TrackSet.from_json(tracks_json)), 4)
                    result = {"benchmark": "tracking", "clip": name, "version": version, "preset": args.preset,
                              **result, "load_1min": round(os.getloadavg()[0], 1), "machine": machine}
                    print(json.dumps(result), flush=True)
                    if version not in best or result["cpu_s"] < best[version]["cpu_s"]:
                        best[version] = result
            if "baseline" in best:
                b, c = best["baseline"], best["current"]
                print(json.dumps({"benchmark": "tracking", "clip": name, "compare": "current / baseline",
                                  "fps_ratio": round(c["fps"] / b["fps"], 2),
                                  "cpu_ratio": round(c["cpu_s"] / b["cpu_s"], 3),
                                  "idle_2core_fps_estimate": [b["idle_2core_fps_estimate"], c["idle_2core_fps_estimate"]],
                                  **({"idf1": [b["idf1"], c["idf1"]]} if truth else {})}), flush=True)


if __name__ == "__main__":
    main()
