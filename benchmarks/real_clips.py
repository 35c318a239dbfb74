"""Real footage without ground truth: does the restoration add flicker, does it keep identity (issue 10)?

    python benchmarks/real_clips.py [--clips hamilton.mp4 keep_real_1.mp4 keep_real_2.mp4] [--frames N]
        [--restorer fusion|flicker|...] [--set blend.temporal=0] [--save-png DIR]

Each clip from ../shared/data/clips is restored by pipeline.run.restore in this process (what `reelface
restore` runs, local executor), then both videos are measured by pipeline.evaluate.measure_without_truth:
face E_warp (pipeline.metrics.warp_errors: flow computed on the input, both videos warped with it,
occlusions masked, inside the faces found on the input) and identity consistency along each face track
(mean cosine of each face's dlib embedding to its track's mean), for the input and the restored video.
`e_warp_ratio` = restored / input face E_warp: above 1 the restoration adds temporal change.

--frames N uses the first N frames only, copied losslessly (libx264 qp 0 in the clip's own pixel format:
the same decoded pixels). --save-png writes, for a few frames, the largest face of input | restored
enlarged. One JSON line per clip.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
CLIPS = REPO.parent / "shared" / "data" / "clips"
# benchmarks/tracking.py would shadow the tracking package when run as a script from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DEFAULT_CLIPS = ("hamilton.mp4", "keep_real_1.mp4", "keep_real_2.mp4")
PNG_FRAMES = 3


def first_frames(source: Path, n: int, target: Path) -> Path:
    """The first n video frames of source, losslessly re-encoded (no audio)."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(source), "-map",
           "0:v:0", "-frames:v", str(n), "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(target)]
    subprocess.run(cmd, check=True, capture_output=True)
    return target


def save_pngs(folder: Path, stem: str, before: list[np.ndarray], after: list[np.ndarray], detector) -> None:
    """For PNG_FRAMES frames spread over the clip: the largest face (found on the input, grown by a
    quarter) of input | restored, enlarged (nearest neighbour) to at least 384 px tall."""
    for t in np.linspace(0, len(before) - 1, PNG_FRAMES + 2).round().astype(int)[1:-1]:
        faces = detector.detect([before[t]])[0]
        if not faces:
            continue
        x0, y0, x1, y1 = max(faces, key=lambda f: f.size).box
        grow = 0.25 * max(x1 - x0, y1 - y0)
        h, w = before[t].shape[:2]
        bx0, by0 = max(int(x0 - grow), 0), max(int(y0 - grow), 0)
        bx1, by1 = min(int(x1 + grow), w), min(int(y1 + grow), h)
        zoom = max(1, int(np.ceil(384 / (by1 - by0))))
        tiles = [cv2.resize(f[t][by0:by1, bx0:bx1], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
                 for f in (before, after)]
        row = np.concatenate([tiles[0], np.full((tiles[0].shape[0], 4, 3), 255, np.uint8), tiles[1]], 1)
        cv2.imwrite(str(folder / f"{stem}_{t:04d}.png"), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS), help="names in ../shared/data/clips")
    parser.add_argument("--frames", type=int, help="use only the first N frames")
    parser.add_argument("--restorer", default="fusion", help="a registry name, or flicker (the test stand-in)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--save-png", type=Path, help="folder for input | restored face PNGs")
    args = parser.parse_args()

    import torch

    from pipeline.config import load_config
    from pipeline.evaluate import measure_without_truth
    from pipeline.restorers.flicker import FlickerRestorer
    from pipeline.run import restore
    from pipeline.video import decode, probe
    from tracking.detectors import RetinaFaceDetector
    from tracking.embedders import DlibEmbedder

    flicker = args.restorer == "flicker"
    restorer = [] if flicker else [f"restore.restorer={args.restorer}"]
    cfg = load_config("default", [*restorer, "run.executor=local", *args.overrides])
    if args.save_png:
        args.save_png.mkdir(parents=True, exist_ok=True)
    detector, embedder = RetinaFaceDetector(threshold=0.6, device="cpu"), DlibEmbedder()
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU"
    for name in args.clips:
        with tempfile.TemporaryDirectory() as tmp:
            source = CLIPS / name
            if args.frames:
                source = first_frames(source, args.frames, Path(tmp) / f"first{Path(name).suffix}")
            began = time.perf_counter()
            output = restore(source, Path(tmp) / f"restored{Path(name).suffix}", cfg,
                             make_restorer=FlickerRestorer if flicker else None)
            seconds = time.perf_counter() - began
            before = [np.array(f.rgb) for f in decode(source)]
            after = [np.array(f.rgb) for f in decode(output)]
        report = measure_without_truth({"input": before, "restored": after}, before, detector, embedder)
        e_in, e_out = report["input"]["face_e_warp"], report["restored"]["face_e_warp"]
        print(json.dumps({
            "measure": "real_clip", "clip": name, "frames": len(before), "restorer": args.restorer,
            "overrides": args.overrides, "tracks": report["tracks"],
            "input": {k: report["input"][k] for k in ("face_e_warp", "identity_consistency")},
            "restored": {k: report["restored"][k] for k in ("face_e_warp", "identity_consistency")},
            "e_warp_ratio": round(e_out / e_in, 3) if e_in and e_out is not None else None,
            "identity_per_track": {"input": report["input"]["identity_consistency_per_track"],
                                   "restored": report["restored"]["identity_consistency_per_track"]},
            "restore_s": round(seconds, 1), "source_frames": probe(CLIPS / name).frame_count,
            "machine": machine}), flush=True)
        if args.save_png:
            save_pngs(args.save_png, Path(name).stem, before, after, detector)


if __name__ == "__main__":
    main()
