"""What checking everything before any work costs: `preflight.check_restore` against a whole restore.

    python benchmarks/preflight.py [--input ../shared/data/clips/hamilton.mp4] [--repeats 3]

check_restore = output guard, keyframe decode for frame-size changes, restorer check, and the rehearsal
(the first frames through the configured encoder and into the output container, timing checked).
It runs once more inside every restore, so the ratio is the share of a restore it adds. Restorer:
identity (the pure video path, the smallest restore there is, so the largest share); encoder settings
of the default preset. Prints one JSON line per repeat and one with the medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# benchmarks/tracking.py would shadow the tracking package when run as a script from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(REPO.parent / "shared" / "data" / "clips" / "hamilton.mp4"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pipeline.config import load_config
    from pipeline.preflight import check_restore
    from pipeline.run import restore
    from pipeline.video import probe

    source = Path(args.input)
    cfg = load_config("default", ["restore.restorer=identity"])
    info = probe(source)
    checks, totals = [], []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.repeats):
            target = Path(folder) / f"out{k}.mp4"
            began = time.perf_counter()
            check_restore(source, target, info, cfg, False, with_faces=False, custom_restorer=False)
            checks.append(time.perf_counter() - began)
            began = time.perf_counter()
            restore(source, target, cfg)
            totals.append(time.perf_counter() - began)
            print(json.dumps({"benchmark": "preflight", "repeat": k, "check_s": round(checks[-1], 3),
                              "restore_s": round(totals[-1], 3)}))
    check, total = statistics.median(checks), statistics.median(totals)
    print(json.dumps({"benchmark": "preflight", "input": source.name, "frames": info.frame_count,
                      "size": f"{info.width}x{info.height}", "check_s": round(check, 3),
                      "restore_s": round(total, 3), "check_share_of_restore": round(check / total, 3),
                      "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores"}))


if __name__ == "__main__":
    main()
