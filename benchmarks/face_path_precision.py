"""Cost of the precise face path (issue 12) against the 8-bit one it replaced, measured in the same run.

Per decoded frame of hamilton.mp4 (640x360 8-bit) and of a generated 10-bit clip of the same size:
1. the display picture faces are found in: `Frame.rgb` (native planes -> float working space -> uint8)
   against swscale's native -> rgb24 conversion (what `Frame.rgb` was);
2. one 512 face crop: `FrameView.face_crops` (float, from the native planes around the face) against
   `align.warp_faces` on the uint8 picture (the old crop);
3. one paste of a face-sized change into the native planes (`FrameView.paste`).

Prints one JSON line per measurement: median milliseconds per frame and the ratio new / old.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import align, blend, synth  # noqa: E402
from pipeline.video import decode, probe, rgb_conversions  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def measure(path: Path, frames: int, repeats: int) -> list[dict]:
    info = probe(path)
    h, w = info.height, info.width
    # a face a third of the frame high, in the middle
    landmarks = align.FFHQ_TEMPLATE_512[None] * (h / 3 / 512) + np.array([w / 2 - h / 6, h / 3], np.float32)
    transform = align.estimate_transforms(landmarks)
    change = np.full((512, 512, 3), 2.0, np.float32)
    rows = {"display picture": ([], []), "face crop": ([], []), "paste": ([], [])}
    for frame in decode(path, 0, frames, info=info):
        to_rgb, _ = rgb_conversions(info, frame.native.format)
        view = frame.views()[0]

        def fresh_rgb():
            frame._rgb = None
            return frame.rgb

        rows["display picture"][0].append(_ms(fresh_rgb, repeats))
        rows["display picture"][1].append(_ms(lambda: frame.native.reformat(format="rgb24", **to_rgb).to_ndarray(),
                                              repeats))
        rgb = frame.native.reformat(format="rgb24", **to_rgb).to_ndarray()
        rows["face crop"][0].append(_ms(lambda: view.face_crops(transform), repeats))
        rows["face crop"][1].append(_ms(lambda: align.warp_faces(rgb, transform), repeats))
        pasted = blend.paste_changes(view.geometry, [(change, transform[0])], 0.1)
        rows["paste"][0].append(_ms(lambda: view.paste(*pasted), 1))  # it changes the frame: once
    out = []
    for name, (new, old) in rows.items():
        entry = {"benchmark": "face_path_precision", "clip": path.name, "pix_fmt": info.pix_fmt,
                 "size": f"{w}x{h}", "frames": frames, "step": name, "new_ms": round(statistics.median(new), 2)}
        if old:
            entry["old_ms"] = round(statistics.median(old), 2)
            entry["ratio"] = round(entry["new_ms"] / entry["old_ms"], 2)
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clip = DATA / "clips" / "hamilton.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        ten_bit = Path(tmp) / "hamilton10.mkv"
        synth.write_clip(ten_bit, (f.rgb for f in decode(clip, 0, args.frames)),
                         synth.ClipSpec(codec="ffv1", pix_fmt="yuv420p10le"))
        for path in (clip, ten_bit):
            for entry in measure(path, args.frames, args.repeats):
                print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
