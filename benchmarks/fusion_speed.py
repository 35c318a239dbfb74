"""Fusion restorer speed per crop, against an earlier version of it, in the same run.

    python benchmarks/fusion_speed.py [--against REV] [--sizes 48 96 160 280] [--window 15] [--repeats 3]

The crop of a face now follows its size in the frame (pipeline.process.crop_geometry); the earlier
fusion took every face at 512x512. For each face box size (in frame pixels) this times the current
restorer on crops of the size it gets, and the version of pipeline/restorers/fusion.py at REV (default:
the last one before the adaptive rewrite) on the 512 crops it took, on the same noisy texture run.
The two alternate `--repeats` times per size, so a machine whose load changes weighs on both alike;
the medians of wall and of process CPU time (all threads: OpenCV's too) per crop are compared.
One JSON line per size.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
BEFORE_REWRITE = "a18a2a4~1"
FACE_TO_TEMPLATE = 0.49  # the detector's face box spans about this much of the 512 FFHQ crop


def _load_version(rev: str):
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:pipeline/restorers/fusion.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "fusion_then.py"
    path.write_text(source.replace("from .base import", "from pipeline.restorers.base import"))
    spec = importlib.util.spec_from_file_location("fusion_then", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(size: int, n: int, seed: int = 0):
    import cv2
    import torch

    rng = np.random.default_rng(seed)
    tex = cv2.resize(rng.uniform(0, 1, (size // 6, size // 6, 3)).astype(np.float32), (size, size))
    frames = np.stack([np.roll(tex, k, axis=1) + rng.normal(0, 0.03, tex.shape) for k in range(n)])
    return torch.from_numpy(np.clip(frames, 0, 1).astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def _ms_per_crop(restorer, crops, **told) -> tuple[float, float]:
    """(wall, CPU) ms per crop of one call over the whole run."""
    began, cpu = time.perf_counter(), time.process_time()
    restorer.restore(crops, None, **told)
    return (1000 * (time.perf_counter() - began) / len(crops), 1000 * (time.process_time() - cpu) / len(crops))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default=BEFORE_REWRITE)
    parser.add_argument("--sizes", nargs="+", type=int, default=[48, 96, 160, 280])
    parser.add_argument("--window", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from pipeline import align
    from pipeline.process import crop_geometry
    from pipeline.restorers.fusion import FusionRestorer

    now, then = FusionRestorer(), _load_version(args.against).FusionRestorer()
    then_crops = _run(align.CROP_SIZE, args.window)
    then.restore(then_crops[:3], None)  # warm-up
    for face in args.sizes:
        # a transform whose 512 crop holds a face of `face` frame pixels
        scale = FACE_TO_TEMPLATE * align.CROP_SIZE / face
        transforms = np.array([[[scale, 0, 0], [0, scale, 0]]], np.float32)
        size, zoom = crop_geometry(transforms, now)
        # crop px per frame px, as process tells it
        told = {"scale": float(align.transform_scale(align.crop_transforms(transforms, size, zoom))[0])}
        now_crops = _run(size, args.window)
        now.restore(now_crops[:3], None, **told)
        times = [(_ms_per_crop(then, then_crops), _ms_per_crop(now, now_crops, **told)) for _ in range(args.repeats)]
        (then_wall, then_cpu), (now_wall, now_cpu) = (np.median([t[k] for t in times], 0) for k in (0, 1))
        print(json.dumps({"measure": "fusion_ms_per_crop", "face_px": face, "crop_px": size,
                          "now_ms": round(now_wall, 1), "then_ms_512": round(then_wall, 1),
                          "ratio_now_to_then": round(now_wall / then_wall, 3),
                          "now_cpu_ms": round(now_cpu, 1), "then_cpu_ms_512": round(then_cpu, 1),
                          "cpu_ratio_now_to_then": round(now_cpu / then_cpu, 3), "repeats": args.repeats,
                          "against": args.against, "torch_threads": torch.get_num_threads()}), flush=True)

if __name__ == "__main__":
    main()
