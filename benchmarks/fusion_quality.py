"""Fusion restorer on generated ground-truth clips (the evaluate protocol), and its CPU time per crop.

    python benchmarks/fusion_quality.py [--frames 24] [--photos obama/obama1.jpg biden/biden2.jpg ...]

For each photo: make_ground_truth_clip (512x512, smooth path, blur 1.2 + 2x down/up + noise 8 + JPEG
35), restore with the exact landmarks as the track (what tracking hands over, minus its errors), then
measure_against_truth for the input and the restored clip. One JSON line per clip, one for ms/crop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--photos", nargs="*", default=["obama/obama1.jpg", "biden/biden2.jpg",
                                                        "rose_leslie/rose2.jpg"])
    args = parser.parse_args()

    import torch

    from pipeline.config import load_config
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip, measure_against_truth, restore_clip
    from pipeline.restorers.fusion import FusionRestorer

    cfg = load_config("default")
    restorer = FusionRestorer(cfg.restore)
    for photo in args.photos:
        clip = make_ground_truth_clip(REPO.parent / "shared" / "data" / "refs" / photo, n_frames=args.frames)
        began = time.perf_counter()
        restored = restore_clip(clip.degraded, ground_truth_trackset(clip.landmarks), restorer, cfg)
        seconds = time.perf_counter() - began
        report = measure_against_truth({"input": clip.degraded, "restored": restored}, clip.clean)
        keys = ("psnr", "face_psnr", "inner_face_psnr", "face_ssim", "identity_cosine", "akd_px", "e_warp",
                "face_e_warp")
        print(json.dumps({"measure": "fusion_ground_truth", "photo": photo, "frames": args.frames,
                          "input": {k: report["input"][k] for k in keys},
                          "restored": {k: report["restored"][k] for k in keys},
                          "restore_s_per_frame": round(seconds / args.frames, 3)}), flush=True)

    crops = torch.rand(2 * restorer.temporal_radius + 1, 3, 512, 512)
    restorer.restore(crops[:3], None)  # warm-up
    began = time.perf_counter()
    restorer.restore(crops, None)
    ms = 1000 * (time.perf_counter() - began) / len(crops)
    print(json.dumps({"measure": "fusion_ms_per_crop", "window": len(crops), "ms_per_crop": round(ms, 1),
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
