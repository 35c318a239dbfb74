"""I/O overhead of `reelface restore --restorer identity` and its memory use versus clip length.

1. Wall time (and CPU time, steadier on a shared machine) of run.restore (called in-process, identity restorer, default encoder settings: libx264
   crf 16 preset medium) against a plain PyAV decode + encode of the same clip with the same encoder
   settings (video only, written straight to an MP4), alternating, median of --repeats runs; ratio
   target <= 1.3.
2. Peak RSS of a child process running run.restore on generated clips of 10 s and 60 s (flat = the
   decode/encode path streams).

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import synth  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.run import restore  # noqa: E402
from pipeline.video import choose_pix_fmt, probe  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or platform.system()}"


def generated_clip(path: Path, seconds: int, size=(640, 360), fps=30) -> Path:
    photo = cv2.cvtColor(cv2.imread(str(DATA / "images" / "obama-1080p.jpg")), cv2.COLOR_BGR2RGB)
    frames = (f for f, _ in synth.moving_photo(photo, seconds * fps, size, seed=seconds))
    return synth.write_clip(path, frames, synth.ClipSpec(time_base=Fraction(1, fps), audio=[synth.AudioTrack()]))


def plain_pyav(src: Path, dst: Path, cfg) -> None:
    """The baseline: decode every frame, encode it with the same encoder settings and pts, nothing else."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        vout = out.add_stream(cfg.encode.codec, options={"crf": str(cfg.encode.crf), "preset": cfg.encode.preset})
        vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
        vout.pix_fmt = choose_pix_fmt(cfg.encode.codec, vin.codec_context.pix_fmt)
        vout.codec_context.time_base = vout.time_base = vin.time_base
        vout.codec_context.framerate = vin.average_rate  # as VideoWriter: x264's rate control reads it
        vout.codec_context.thread_type = "AUTO"
        for frame in inp.decode(vin):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(vout.encode(frame))
        out.mux(vout.encode(None))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process (codec threads too)
    return usage.ru_utime + usage.ru_stime


def time_ratio(src: Path, repeats: int, tmp: Path) -> dict:
    cfg = load_config("default", ["restore.restorer=identity"])
    ours, plain, ours_cpu, plain_cpu = [], [], [], []
    for i in range(repeats):
        for out, runs, cpu, fn in ((tmp / f"ours{i}.mp4", ours, ours_cpu, lambda s, d: restore(s, d, cfg)),
                                   (tmp / f"plain{i}.mp4", plain, plain_cpu, lambda s, d: plain_pyav(s, d, cfg))):
            start, start_cpu = time.perf_counter(), _cpu_s()
            fn(src, out)
            runs.append(time.perf_counter() - start)
            cpu.append(_cpu_s() - start_cpu)
            out.unlink()
    frames = probe(src).frame_count
    return {"measure": "io_overhead", "clip": src.name, "frames": frames,
            "encoder": f"{cfg.encode.codec} crf {cfg.encode.crf} preset {cfg.encode.preset}",
            "restore_identity_s": round(statistics.median(ours), 3),
            "plain_pyav_s": round(statistics.median(plain), 3),
            "ratio": round(statistics.median(ours) / statistics.median(plain), 3),
            "cpu_ratio": round(statistics.median(ours_cpu) / statistics.median(plain_cpu), 3),
            "restore_fps": round(frames / statistics.median(ours), 1), "repeats": repeats,
            "load_avg_1min": round(os.getloadavg()[0], 2),
            "how": "run.restore in-process vs PyAV decode+encode, median", "machine": machine()}


def peak_rss(src: Path, tmp: Path) -> dict:
    """run.restore in a fresh child process; its own peak RSS from wait4 (not the parent's)."""
    code = ("import sys; from pipeline.config import load_config; from pipeline.run import restore; "
            "restore(sys.argv[1], sys.argv[2], load_config('default', ['restore.restorer=identity']))")
    out = tmp / f"rss_{src.stem}.mp4"
    proc = subprocess.Popen([sys.executable, "-c", code, str(src), str(out)], cwd=REPO,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"restore failed on {src}"
    out.unlink()
    info = probe(src)
    return {"measure": "peak_rss", "clip": src.name, "seconds": round(info.duration, 2),
            "frames": info.frame_count, "size": f"{info.width}x{info.height}",
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "how": "child process, wait4 ru_maxrss",
            "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-seconds", type=int, nargs="+", default=[10, 60])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clips = {s: generated_clip(tmp / f"gen{s}s.mp4", s) for s in sorted({10, *args.rss_seconds})}
        for src in (DATA / "clips" / "hamilton.mp4", clips[10]):
            print(json.dumps(time_ratio(src, args.repeats, tmp)), flush=True)
        for seconds in args.rss_seconds:
            print(json.dumps(peak_rss(clips[seconds], tmp)), flush=True)


if __name__ == "__main__":
    main()
