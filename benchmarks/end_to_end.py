"""Frames per second of the whole `reelface restore` on a clip (CPU, local executor), and time per stage.

    python benchmarks/end_to_end.py [--input ../shared/data/clips/hamilton.mp4] [--restorer fusion]

Runs pipeline.run.restore in this process with the stage functions wrapped by timers, and prints one
JSON line per stage plus one for the whole run. The `faces` stage is process.restore_frames (align,
restorer, blend, paste); `render` is the rest of each chunk (decode + encode).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# benchmarks/tracking.py would shadow the tracking package when run as a script from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _timed(table: dict, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            table[name] += time.perf_counter() - began
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(REPO.parent / "shared" / "data" / "clips" / "hamilton.mp4"))
    parser.add_argument("--restorer", default="fusion")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    import torch

    from pipeline import mux, process, run, stages
    from pipeline.config import load_config
    from pipeline.video import probe

    cfg = load_config("default", [f"restore.restorer={args.restorer}", "run.executor=local", *args.overrides])
    seconds: dict[str, float] = defaultdict(float)
    stages.detect_stage = _timed(seconds, "detect", stages.detect_stage)
    run.tracks_stage = _timed(seconds, "tracks", run.tracks_stage)
    run.references_stage = _timed(seconds, "references", run.references_stage)
    stages.render_stage = _timed(seconds, "render_total", stages.render_stage)
    process.restore_frames = _timed(seconds, "faces", process.restore_frames)
    mux.assemble = _timed(seconds, "assemble", mux.assemble)

    info = probe(args.input)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        run.restore(args.input, Path(tmp) / "out.mp4", cfg)
        total = time.perf_counter() - began
    seconds["render"] = seconds.pop("render_total") - seconds["faces"]
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU"
    common = {"clip": Path(args.input).name, "frames": info.frame_count, "restorer": args.restorer,
              "machine": machine}
    for stage in ("detect", "tracks", "references", "faces", "render", "assemble"):
        print(json.dumps({"measure": f"stage_{stage}", **common, "seconds": round(seconds[stage], 2),
                          "frames_per_s": round(info.frame_count / seconds[stage], 2) if seconds[stage] else None}))
    print(json.dumps({"measure": "end_to_end", **common, "seconds": round(total, 2),
                      "frames_per_s": round(info.frame_count / total, 3)}))


if __name__ == "__main__":
    main()
