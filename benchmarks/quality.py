"""Face restoration quality on generated ground-truth clips, against a simple multi-frame baseline (issue 10).

    python benchmarks/quality.py [--part tune|dev|heldout|all] [--photos ...] [--sizes 48 96 160 280]
        [--degradations chain h264 down3 noise] [--frames 30] [--restorer fusion|flicker|...]
        [--set blend.temporal=0] [--tracked] [--save-png DIR]

The grid: photos x face sizes x degradations. Each clip is pipeline.evaluate.make_ground_truth_clip at
640x480: the whole photo scaled so that its face box's longer side is the face size, the face at the
centre, the photo's own surroundings around it, moving along a smooth sub-pixel similarity path; then one
of pipeline.synth.DEGRADATIONS (chain: blur 1.2, 2x area down + bicubic up, noise 8, JPEG 35; h264:
libx264 at 250 kbit/s; down3: 3x area down + bicubic up; noise: Gaussian noise 8).

Methods, all on the same degraded frames in the same run:
- input: the degraded clip itself;
- baseline: the issue's yardstick (`multi_frame_baseline`): the 11 surrounding frames aligned to each
  frame by DIS optical flow, robust mean with weights exp(-d^2 / (2 * 15^2)) against the per-pixel median
  of the aligned stack, then an unsharp mask (sigma 1.5, amount 1);
- reelface: pipeline.evaluate.restore_clip with the chosen restorer and config, given the ground-truth
  track (the exact landmarks; no references); with --tracked, detection + tracking + references as
  `reelface restore` does them, on the degraded clip written losslessly.

Per clip and method: face-box and inner-face PSNR, SSIM (scikit-image, luma) in the face box, identity
cosine to the ground truth (dlib, on IDENTITY_SAMPLES frames), face E_warp (pipeline.metrics.warp_errors:
flow from the input video), face E_warp along the clip's exact motion (pipeline.metrics.motion_warp_error:
no flow, so it counts flicker alone), the luma's gain against the truth in rings of radial frequency 0.05 cycles a
frame pixel wide (pipeline.metrics.frequency_response: over 1 is overshoot, under 1 detail lost), and ms
per frame. The ground truth's own face E_warp is given too: it moves
without any flicker, so its figure is the part of E_warp that is the input flow's error on detail that
sharp: a faithful restoration comes near it as it comes near the truth's sharpness (a blurrier video has
less detail for the flow's error to show, hence a lower E_warp without being steadier). The face box is the photo's detected box carried along the
path. Flow (baseline and E_warp) is computed on a window around the face (the face box grown by one box
size on each side), which leaves the result inside the box as on whole frames and costs less.

The photos are split in three parts, fixed here: TUNE (what the restorer may be tuned on), DEV (photos
in no grid, to choose between alternatives that the tune photos cannot tell apart; kit1 is the same
person as the held-out kit2 in another photo), and HELDOUT (only reported). A photo given with
`--photos` outside the three is part "other". One JSON line per clip, then summary lines per part (and
per part and degradation, per part and size). `--summarise FILE...` prints the summaries of clip lines
saved by earlier runs (e.g. one run per photo, run side by side).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
# benchmarks/tracking.py would shadow the tracking package when run as a script from this folder
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

TUNE = ("images/obama-1080p.jpg", "refs/biden/biden2.jpg")
DEV = ("refs/obama/obama1.jpg", "refs/obama/obama2.jpg", "refs/biden/biden1.jpg", "refs/kit_harington/kit1.jpg",
       "images/old_photo_03.jpg")
HELDOUT = ("refs/rose_leslie/rose1.jpg", "refs/kit_harington/kit2.jpg", "images/two_people.jpg")
PARTS = {"tune": TUNE, "dev": DEV, "heldout": HELDOUT}
SIZES = (48, 96, 160, 280)
FRAME = (640, 480)
IDENTITY_SAMPLES = 4
BASELINE_RADIUS = 5  # 11 frames
BASELINE_TOLERANCE = 15.0  # grey levels: the robust mean's weight scale


def part_of(photo: str) -> str:
    return next((name for name, photos in PARTS.items() if photo in photos), "other")


def multi_frame_baseline(frames: list[np.ndarray]) -> list[np.ndarray]:
    """DIS-aligned robust mean of the 2 * BASELINE_RADIUS + 1 surrounding frames, then an unsharp mask."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    h, w = greys[0].shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = []
    for t, frame in enumerate(frames):
        stack = [frame.astype(np.float32)]
        for s in range(max(0, t - BASELINE_RADIUS), min(len(frames), t + BASELINE_RADIUS + 1)):
            if s != t:
                flow = dis.calc(greys[t], greys[s], None)  # frame t at x ~ frame s at x + flow
                stack.append(cv2.remap(frames[s], gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE).astype(np.float32))
        stack = np.stack(stack)
        median = np.median(stack, 0)
        weights = np.exp(-((stack - median) ** 2) / (2 * BASELINE_TOLERANCE ** 2))
        mean = (weights * stack).sum(0) / weights.sum(0)
        sharp = 2 * mean - cv2.GaussianBlur(mean, (0, 0), 1.5)  # unsharp mask, amount 1
        out.append(np.clip(np.rint(sharp), 0, 255).astype(np.uint8))
    return out


def grid_order(sizes: list[int], degradations: list[str]) -> list[tuple[int, str]]:
    """Every (size, degradation) pair, ordered in diagonals: each run of max(len) pairs covers every size
    and every degradation, so a run stopped early still measures the whole grid's spread."""
    pairs = [(i, j) for i in range(len(sizes)) for j in range(len(degradations))]
    pairs.sort(key=lambda p: ((p[1] - p[0]) % len(degradations), p[0]))
    return [(sizes[i], degradations[j]) for i, j in pairs]


def _int_box(box, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return (max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0), min(int(np.ceil(box[2])), w),
            min(int(np.ceil(box[3])), h))


def _window(boxes: np.ndarray, shape) -> tuple[int, int, int, int]:
    """The face boxes' union grown by one box size (at least 64 px) on every side, in the frame."""
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    grow = max(64.0, float((boxes[:, 2:] - boxes[:, :2]).max()))
    return _int_box((lo[0] - grow, lo[1] - grow, hi[0] + grow, hi[1] + grow), shape)


def windowed(method, frames: list[np.ndarray], window: tuple[int, int, int, int]) -> list[np.ndarray]:
    """`method` run on the window of every frame, pasted into a copy of the frames."""
    x0, y0, x1, y1 = window
    out = [f.copy() for f in frames]
    for full, part in zip(out, method([f[y0:y1, x0:x1] for f in frames])):
        full[y0:y1, x0:x1] = part
    return out


def _tracked(degraded: list[np.ndarray], cfg):
    """Detection, tracks and references as `reelface restore` makes them, on the clip written losslessly."""
    from pipeline.references import select_references
    from pipeline.synth import ClipSpec, write_clip
    from tracking.build import build_tracks
    from tracking.detect import detect_chunk

    with tempfile.TemporaryDirectory() as tmp:
        path = write_clip(Path(tmp) / "input.mkv", degraded,
                          ClipSpec(pix_fmt="yuv444p", options={"preset": "ultrafast", "qp": "0"}))
        trackset = build_tracks([detect_chunk(path, 0, len(degraded), cfg)], len(degraded), cfg)
        return trackset, select_references(path, trackset, cfg)


def measure_clip(clip, videos: dict[str, list[np.ndarray]], embedder) -> dict:
    """Face-box measures of each video against clip.clean (see the module docstring)."""
    from pipeline import metrics
    from tracking.faces import Face

    shape = clip.clean[0].shape
    boxes = [_int_box(b, shape) for b in clip.boxes]
    x0, y0, x1, y1 = _window(clip.boxes, shape)
    local = [(b[0] - x0, b[1] - y0, b[2] - x0, b[3] - y0) for b in boxes]
    measured = {**videos, "ground_truth": clip.clean}
    warp = metrics.warp_errors([f[y0:y1, x0:x1] for f in videos["input"]],
                               {name: [f[y0:y1, x0:x1] for f in frames] for name, frames in measured.items()}, local)
    sampled = np.linspace(0, len(clip.clean) - 1, IDENTITY_SAMPLES).round().astype(int)
    faces = {k: Face(box=clip.boxes[k], landmarks=clip.landmarks[k], score=1.0) for k in sampled}
    truth_emb = {k: embedder.embed(clip.clean[k], [faces[k]])[0] for k in sampled}
    out = {}
    for name, frames in videos.items():
        pairs = list(zip(frames, clip.clean, boxes, clip.landmarks))
        out[name] = {
            "face_psnr": float(np.mean([metrics.psnr(f, gt, b) for f, gt, b, _ in pairs])),
            "inner_face_psnr": float(np.mean([metrics.psnr(f, gt, metrics.inner_face_box(lm, shape))
                                              for f, gt, _, lm in pairs])),
            "face_ssim": float(np.mean([metrics.ssim(f, gt, b) for f, gt, b, _ in pairs])),
            "identity_cosine": float(np.mean([metrics.cosine(embedder.embed(frames[k], [faces[k]])[0], truth_emb[k])
                                              for k in sampled])),
            "face_e_warp": warp[name]["face_e_warp"],
            "face_e_warp_true_motion": metrics.motion_warp_error(frames, clip.motion, boxes),
        }
    rounded = {name: {k: round(v, 4) for k, v in values.items()} for name, values in out.items()}
    for name, frames in videos.items():
        gains = metrics.frequency_response(frames, clip.clean, boxes)
        rounded[name]["face_gain_by_frequency"] = [round(g, 3) for g in gains]
    return {**rounded, "ground_truth_face_e_warp": round(warp["ground_truth"]["face_e_warp"], 4),
            "ground_truth_face_e_warp_true_motion": round(metrics.motion_warp_error(clip.clean, clip.motion, boxes), 4)}


def save_png(path: Path, clip, videos: dict[str, list[np.ndarray]]) -> None:
    """Middle frame, ground truth | input | baseline | reelface: the face and some surroundings, enlarged
    (nearest neighbour, so every pixel shows) to at least 384 px tall."""
    t = len(clip.clean) // 2
    x0, y0, x1, y1 = clip.boxes[t]
    grow = 0.25 * max(x1 - x0, y1 - y0)
    bx0, by0, bx1, by1 = _int_box((x0 - grow, y0 - grow, x1 + grow, y1 + grow), clip.clean[t].shape)
    zoom = max(1, int(np.ceil(384 / (by1 - by0))))
    tiles = [cv2.resize(f[t][by0:by1, bx0:bx1], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
             for f in [clip.clean, *videos.values()]]
    gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], 1)
    cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def _summary(rows: list[dict], group: dict) -> dict:
    gain = {m: [r[m]["face_psnr"] - r["input"]["face_psnr"] for r in rows] for m in ("baseline", "reelface")}
    margin = [r["reelface"]["face_psnr"] - r["baseline"]["face_psnr"] for r in rows]
    ratio = [r["reelface"]["face_e_warp"] / max(r["baseline"]["face_e_warp"], 1e-9) for r in rows]
    motion = [r["reelface"]["face_e_warp_true_motion"] / max(r["baseline"]["face_e_warp_true_motion"], 1e-9)
              for r in rows]
    return {
        "measure": "quality_summary", **group, "clips": len(rows),
        "mean_gain_db": {m: round(float(np.mean(v)), 3) for m, v in gain.items()},
        "reelface_minus_baseline_db": {"min": round(min(margin), 3), "mean": round(float(np.mean(margin)), 3)},
        "reelface_beats_baseline": sum(m > 0 for m in margin),
        "identity_below_input": sum(r["reelface"]["identity_cosine"] < r["input"]["identity_cosine"] for r in rows),
        "face_e_warp_above_baseline": sum(x > 1 for x in ratio),
        # the ground truth is steady by construction: what it shows is the metric's own floor at the truth's
        # sharpness (the input's flow misses sub-pixel motion, and misses it more on sharper detail)
        "face_e_warp_above_baseline_and_ground_truth": sum(
            x > 1 and r["reelface"]["face_e_warp"] > r["ground_truth_face_e_warp"] for x, r in zip(ratio, rows)),
        "face_e_warp_reelface_over_baseline": {"max": round(max(ratio), 3), "mean": round(float(np.mean(ratio)), 3)},
        # along the clip's exact motion no flow error is counted: above the baseline there is flicker itself
        "face_e_warp_true_motion_above_baseline": sum(
            r["reelface"]["face_e_warp_true_motion"] > r["baseline"]["face_e_warp_true_motion"] for r in rows),
        "face_e_warp_true_motion_reelface_over_baseline": {"max": round(max(motion), 3),
                                                           "mean": round(float(np.mean(motion)), 3)},
        "face_e_warp_reelface_over_input": round(float(np.mean(
            [r["reelface"]["face_e_warp"] / max(r["input"]["face_e_warp"], 1e-9) for r in rows])), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--photos", nargs="+", help="paths under ../shared/data (default: the part's photos)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--degradations", nargs="+", default=None)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--restorer", default="fusion", help="a registry name, or flicker (the test stand-in)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--tracked", action="store_true", help="detect and track instead of the exact landmarks")
    parser.add_argument("--save-png", type=Path, help="folder for one side-by-side PNG per clip")
    parser.add_argument("--summarise", nargs="+", type=Path, metavar="FILE",
                        help="only print the summaries of the clip lines in these files")
    args = parser.parse_args()
    if args.summarise:
        lines = [json.loads(line) for path in args.summarise for line in path.read_text().splitlines() if line]
        print_summaries([r for r in lines if r["measure"] == "quality_clip"], {"files": [str(p) for p in args.summarise]})
        return

    import torch

    from pipeline.config import load_config
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip, restore_clip
    from pipeline.restorers.flicker import FlickerRestorer
    from pipeline.restorers.registry import get_restorer
    from pipeline.synth import DEGRADATIONS
    from tracking.detectors import RetinaFaceDetector
    from tracking.embedders import DlibEmbedder

    degradations = args.degradations or list(DEGRADATIONS)
    unknown = sorted(set(degradations) - set(DEGRADATIONS))
    if unknown:
        parser.error(f"unknown degradations {unknown} (known: {', '.join(DEGRADATIONS)})")
    photos = args.photos or (sum(PARTS.values(), ()) if args.part == "all" else PARTS[args.part])
    if args.restorer == "flicker":
        cfg, restorer = load_config("default", args.overrides), FlickerRestorer()
    else:
        cfg = load_config("default", [f"restore.restorer={args.restorer}", *args.overrides])
        restorer = get_restorer(cfg.restore)
    if args.save_png:
        args.save_png.mkdir(parents=True, exist_ok=True)
    detector, embedder = RetinaFaceDetector(threshold=0.6, device="cpu"), DlibEmbedder()
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU"
    rows = []
    for photo in photos:
        image = cv2.cvtColor(cv2.imread(str(DATA / photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for size, kind in grid_order(args.sizes, degradations):
            name = f"{photo}|{size}|{kind}"
            clip = make_ground_truth_clip(image, args.frames, FRAME, seed=zlib.crc32(name.encode()) % 10000,
                                          detector=detector, face_size=size, degradation=kind)
            began = time.perf_counter()
            baseline = windowed(multi_frame_baseline, clip.degraded, _window(clip.boxes, clip.clean[0].shape))
            baseline_ms = 1000 * (time.perf_counter() - began) / args.frames
            began = time.perf_counter()
            trackset, refs = (_tracked(clip.degraded, cfg) if args.tracked
                              else (ground_truth_trackset(clip.landmarks), None))
            restored = restore_clip(clip.degraded, trackset, restorer, cfg, refs)
            restore_ms = 1000 * (time.perf_counter() - began) / args.frames
            videos = {"input": clip.degraded, "baseline": baseline, "reelface": restored}
            row = {"measure": "quality_clip", "part": part_of(photo), "photo": photo,
                   "face_px": size, "degradation": kind, "frames": args.frames,
                   "measured_face_px": round(float(np.mean((clip.boxes[:, 2:] - clip.boxes[:, :2]).max(1))), 1),
                   **measure_clip(clip, videos, embedder),
                   "ms_per_frame": {"baseline": round(baseline_ms, 1), "reelface": round(restore_ms, 1)}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.save_png:
                save_png(args.save_png / f"{Path(photo).stem}_{size}_{kind}.png", clip, videos)
    print_summaries(rows, {"restorer": args.restorer, "overrides": args.overrides, "tracked": args.tracked,
                           "machine": machine})


def print_summaries(rows: list[dict], common: dict) -> None:
    """Per part: one summary of all its clips, then one per degradation and one per face size."""
    for part in (*PARTS, "other"):
        part_rows = [r for r in rows if r["part"] == part]
        if not part_rows:
            continue
        print(json.dumps(_summary(part_rows, {"part": part, **common})))
        for key in ("degradation", "face_px"):
            for value in dict.fromkeys(r[key] for r in part_rows):
                print(json.dumps(_summary([r for r in part_rows if r[key] == value], {"part": part, key: value})))

if __name__ == "__main__":
    main()
