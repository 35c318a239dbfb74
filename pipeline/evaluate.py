"""`reelface evaluate`, and the reusable ground-truth protocol behind the quality figures.

With ground truth (generated clips): PSNR and SSIM (whole frame and face boxes), identity cosine to the
ground truth, landmark distance (AKD) and flow-warping temporal error, each for the input and the restored
video. Without ground truth (real footage): identity consistency along each face track, E_warp, and a
side-by-side video. E_warp is always pipeline.metrics.warp_errors: flow computed on the input video, every
video warped with it, occlusions masked; face_e_warp only inside the face boxes. So a restoration that
adds flicker the input does not have scores above the input (ratio restored / input > 1).

The generated clip (documented protocol, `make_ground_truth_clip`): a sharp photo from ../shared/data,
cropped around its face, moved along a smooth random similarity path (pipeline.synth.clean_clip) at
512x512, then degraded by pipeline.synth.degrade (Gaussian blur sigma 1.2, 2x area down + bicubic up,
Gaussian noise sigma 8, JPEG quality 35). Its face landmarks are known exactly on every frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import metrics
from .errors import ReelfaceError
from .synth import ClipSpec, clean_clip, degrade, write_clip

FACE_MARGIN = 2.4  # the photo is cropped to this many face-box sizes around the face before moving it


@dataclass
class GroundTruthClip:
    clean: list[np.ndarray]  # uint8 RGB frames: the ground truth
    degraded: list[np.ndarray]  # the same frames degraded: the input to restore
    landmarks: np.ndarray  # (N, 5, 2) exact landmarks of the face on every frame
    boxes: np.ndarray  # (N, 4) x0, y0, x1, y1: the photo's detected face box carried along the path (its bounds)
    motion: np.ndarray  # (N, 2, 3) the exact camera path: scene coordinates -> frame t (metrics.motion_warp_error)


def _largest_face(faces):
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def _detector():
    from tracking.detectors import RetinaFaceDetector

    return RetinaFaceDetector(threshold=0.6, device="cpu")


def make_ground_truth_clip(photo: str | Path | np.ndarray, n_frames: int = 24, size: int | tuple[int, int] = 512,
                           seed: int = 0, detector=None, face_size: float | None = None,
                           degradation: str = "chain") -> GroundTruthClip:
    """A clean clip of the photo's face on a smooth path, its degraded version, exact landmarks, boxes and motion.

    size: the frame, square side or (width, height). Without face_size the photo is cropped around its
    face (FACE_MARGIN face sizes) and the crop fills the frame. With face_size the whole photo is shown
    scaled so that its face box's longer side is face_size px, the face at the frame's centre and the
    photo's own surroundings around it. degradation: one of pipeline.synth.DEGRADATIONS.
    """
    rgb = _read_rgb(photo) if not isinstance(photo, np.ndarray) else photo
    face = _largest_face((detector or _detector()).detect([rgb])[0])
    if face is None:
        raise ReelfaceError(f"no face found in {photo}: use a photo with a clear frontal face")
    width, height = (size, size) if isinstance(size, int) else size
    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0)
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float32)
    points = np.concatenate([face.landmarks, corners])  # carried along together
    scale = anchor = None
    if face_size is None:
        side *= FACE_MARGIN
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # square crop around the face (reflect at the photo's borders), so the face fills much of the clip
        m = np.array([[1, 0, side / 2 - cx], [0, 1, side / 2 - cy]], np.float32)
        image = cv2.warpAffine(rgb, m, (int(side), int(side)), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_REPLICATE)
        points = points + m[:, 2]
        # clean_clip scales the crop by ~1.25 * size / side: pre-shrink big photos so that is not a downscale
        # by point sampling (aliasing would not be "sharp ground truth")
        shrink = min(1.0, int(np.ceil(1.3 * max(width, height))) / image.shape[0])
    else:
        image, scale = rgb, face_size / side
        # the path zooms out to exp(-0.1) = 0.905: pre-shrink (area-averaged) to 0.9 of the scale, so the
        # moving warp itself never downsamples
        shrink = min(1.0, 0.9 * scale)
        scale /= shrink
        anchor = (float(x0 + x1) / 2 * shrink, float(y0 + y1) / 2 * shrink)
    if shrink < 1.0:
        target = (round(image.shape[1] * shrink), round(image.shape[0] * shrink))
        points = points * (target[0] / image.shape[1], target[1] / image.shape[0])
        image = cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    clean, transforms = clean_clip(image, n_frames, (width, height), seed=seed, scale=scale, anchor=anchor)
    moved = np.einsum("nij,pj->npi", transforms[:, :, :2], points) + transforms[:, None, :, 2]
    boxes = np.concatenate([moved[:, 5:].min(1), moved[:, 5:].max(1)], 1)
    return GroundTruthClip(clean, degrade(clean, seed=seed, kind=degradation), moved[:, :5].astype(np.float32),
                           boxes.astype(np.float32), transforms)


def ground_truth_trackset(landmarks: np.ndarray):
    """One track following the given landmarks on every frame (what a perfect tracker would hand over)."""
    from tracking.faces import Track, TrackSet

    n = len(landmarks)
    lo, hi = landmarks.min(1), landmarks.max(1)
    pad = (hi - lo).max(1, keepdims=True) * 0.6
    boxes = np.concatenate([lo - pad, hi + pad], 1).astype(np.float32)
    track = Track(track_id=0, person_id=0, shot=0, frames=list(range(n)), boxes=boxes,
                  landmarks=landmarks.astype(np.float32), raw_landmarks=landmarks.astype(np.float32),
                  scores=np.ones(n, np.float32), detected=np.ones(n, bool))
    return TrackSet(tracks=[track], cuts=[], frame_count=n)


def restore_clip(frames: list[np.ndarray], trackset, restorer, cfg, refs=None) -> list[np.ndarray]:
    """Run restore_frames on in-memory frames; returns the restored frames."""
    from .process import ArrayFrame, restore_frames

    held = [ArrayFrame(i, f) for i, f in enumerate(frames)]
    restore_frames(held, trackset, refs, restorer, cfg)
    return [f.rgb for f in held]


# ---- measuring ---------------------------------------------------------------------------------------


def _face_box(face, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0, x1, y1 = face.box
    return max(int(x0), 0), max(int(y0), 0), min(int(np.ceil(x1)), w), min(int(np.ceil(y1)), h)


def _match(faces, box):
    """The detected face whose centre lies in `box` (None when none does)."""
    x0, y0, x1, y1 = box
    inside = [f for f in faces if x0 <= (f.box[0] + f.box[2]) / 2 <= x1 and y0 <= (f.box[1] + f.box[3]) / 2 <= y1]
    return _largest_face(inside)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


IDENTITY_SAMPLES = 8  # frames per video whose identity embedding is compared
# names of the measuring frames among the measured videos while they are read in lockstep
TRUTH, REFERENCE = "ground truth", "reference"


def _samples(n: int, k: int) -> set[int]:
    return set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist())


def _lockstep(videos: dict[str, Iterable[np.ndarray]], frame_count: int, counted_by: str):
    """(k, {name: frame}) for each frame, all videos read together (one frame of each held); a video with
    another number of frames is a user error (said up front for lists, else when one ends early)."""
    for name, frames in videos.items():
        if hasattr(frames, "__len__") and len(frames) != frame_count:
            raise ReelfaceError(f"{name} has {len(frames)} frames, the {counted_by} {frame_count}: "
                                "evaluate the same clip")
    try:
        for k, frames in enumerate(zip(*videos.values(), strict=True)):
            yield k, dict(zip(videos, frames))
    except ValueError:
        raise ReelfaceError(f"the videos do not all have the {counted_by}'s {frame_count} frames: "
                            "evaluate the same clip") from None


def _frame_count(frames, given: int | None) -> int:
    if given is not None:
        return given
    if hasattr(frames, "__len__"):
        return len(frames)
    raise ValueError("give frame_count when the frames are streamed")


def measure_against_truth(videos: dict[str, Iterable[np.ndarray]], truth: Iterable[np.ndarray],
                          detector=None, embedder=None, frame_count: int | None = None) -> dict:
    """Per named video: PSNR/SSIM (frame and face), identity cosine, AKD against the ground truth, and
    E_warp with the motion of videos["input"] (which must be there).

    Frames may be lists or streams (decoded files): one frame of each video is held at a time, and
    `frame_count` is needed for streams. Faces are the detector's boxes on the ground truth; identity is
    compared on IDENTITY_SAMPLES frames spread over the clip."""
    if "input" not in videos:
        raise ValueError("measure_against_truth needs the 'input' video: E_warp uses its motion")
    detector = detector or _detector()
    embedder = embedder or _embedder()
    n = _frame_count(truth, frame_count)
    sampled = _samples(n, IDENTITY_SAMPLES)
    keys = ("psnr", "ssim", "face_psnr", "face_ssim", "inner_psnr", "ident", "akd")
    acc = {name: {key: [] for key in keys} for name in videos}
    warp = metrics.StreamedWarpError(videos)
    faces_in_truth = 0
    for k, frames in _lockstep({TRUTH: truth, **videos}, n, "ground truth"):
        gt = frames.pop(TRUTH)
        gt_face = _largest_face(detector.detect([gt])[0])
        box = _face_box(gt_face, gt.shape) if gt_face is not None else None
        faces_in_truth += box is not None
        emb = embedder.embed(gt, [gt_face])[0] if gt_face is not None and k in sampled else None
        warp.add(frames["input"], frames, box)
        for name, img in frames.items():
            numbers = acc[name]
            numbers["psnr"].append(metrics.psnr(img, gt))
            numbers["ssim"].append(metrics.ssim(img, gt))
            if box is None:
                continue
            numbers["face_psnr"].append(metrics.psnr(img, gt, box))
            numbers["face_ssim"].append(metrics.ssim(img, gt, box))
            numbers["inner_psnr"].append(metrics.psnr(img, gt, metrics.inner_face_box(gt_face.landmarks, img.shape)))
            if emb is not None:
                numbers["ident"].append(metrics.cosine(embedder.embed(img, [gt_face])[0], emb))
            match = _match(detector.detect([img])[0], box)
            numbers["akd"].append(metrics.landmark_distance(match.landmarks, gt_face.landmarks)
                                  if match is not None else None)
    out = {"frames": n, "faces_in_truth": faces_in_truth}
    for name, numbers in acc.items():
        out[name] = {
            "psnr": _mean(numbers["psnr"]), "ssim": _mean(numbers["ssim"]),
            "face_psnr": _mean(numbers["face_psnr"]), "face_ssim": _mean(numbers["face_ssim"]),
            "inner_face_psnr": _mean(numbers["inner_psnr"]),
            "identity_cosine": _mean(numbers["ident"]), "akd_px": _mean(numbers["akd"]),
            "faces_detected": sum(a is not None for a in numbers["akd"]),
            **warp.errors(name),
        }
    return out



def track_reference(path: str | Path, frame_count: int):
    """The faces of a video file as tracking/ follows them (every frame detected, streamed: only the
    faces are kept)."""
    from tracking.build import build_tracks
    from tracking.detect import detect_chunk

    cfg = _tracking_config()
    return build_tracks([detect_chunk(path, 0, frame_count, cfg)], frame_count, cfg)


def track_frames(frames: list[np.ndarray], detector=None):
    """The faces of frames held in memory as tracking/ follows them (shot cuts, tracker, linking), every
    frame detected with `detector`."""
    from tracking.build import build_tracks
    from tracking.detect import ChunkDetections
    from tracking.shots import ShotScorer, thumbnail

    detector = detector or _detector()
    scorer = ShotScorer()
    thumbs = [thumbnail(f) for f in frames]
    scores = np.array([scorer.score(t) for t in thumbs])
    n = len(frames)
    faces = [detector.detect([f])[0] for f in frames]
    chunk = ChunkDetections(0, n, faces, np.ones(n, bool), scores, thumbs[0], thumbs[-1])
    return build_tracks([chunk], n, _tracking_config())


def _tracking_config():
    from .config import load_config

    return load_config("default", ["detect.stride=1"])  # evaluation: a measured face on every frame


def measure_without_truth(videos: dict[str, Iterable[np.ndarray]], reference: Iterable[np.ndarray],
                          detector=None, embedder=None, min_track: int = 5, trackset=None) -> dict:
    """Identity consistency along each face track (mean cosine of each face to its track's mean) and
    E_warp with the reference's (the input's) motion, for each named video.

    The tracks are tracking/'s: `trackset` (e.g. `track_reference` of the input file), or, when it is
    not given, `track_frames` of the reference (then a list). Frames may be streams when `trackset` is
    given: one frame of each video is held at a time."""
    from tracking.faces import Face

    embedder = embedder or _embedder()
    trackset = trackset if trackset is not None else track_frames(reference, detector)
    tracks = [t for t in trackset.tracks if len(t.frames) >= min_track]
    faces_at: dict[int, list] = {}  # frame -> [(track number, Face)]
    for number, track in enumerate(tracks):
        for i, frame in enumerate(track.frames):
            faces_at.setdefault(frame, []).append((number, Face(track.boxes[i], track.landmarks[i], track.scores[i])))
    # consistency = mean over a track's faces of cos(e, mean e) = |sum e| / count for unit embeddings
    sums = {name: [np.zeros(0)] * len(tracks) for name in videos}
    counts = [0] * len(tracks)
    warp = metrics.StreamedWarpError(videos)
    for k, frames in _lockstep({REFERENCE: reference, **videos}, trackset.frame_count, "input"):
        ref = frames.pop(REFERENCE)
        here = faces_at.pop(k, [])
        largest = max((face for _, face in here), key=lambda f: f.box[2] - f.box[0], default=None)
        warp.add(ref, frames, _face_box(largest, ref.shape) if largest is not None else None)
        for number, face in here:
            counts[number] += 1
            for name, img in frames.items():
                emb = np.asarray(embedder.embed(img, [face])[0], np.float64)
                total = sums[name][number]
                sums[name][number] = emb if total.size == 0 else total + emb
    out: dict = {"frames": trackset.frame_count, "tracks": len(tracks)}
    for name in videos:
        consistency = [float(np.linalg.norm(total)) / count for total, count in zip(sums[name], counts) if count]
        out[name] = {
            "identity_consistency": _mean(consistency),
            "identity_consistency_per_track": [round(c, 4) for c in consistency],
            **warp.errors(name),
        }
    return out



def _frames(path: str | Path) -> Iterator[np.ndarray]:
    """A video's frames decoded one at a time (never the whole video in memory)."""
    from .video import decode

    return (np.array(frame.rgb) for frame in decode(path))


def side_by_side(left: Iterable[np.ndarray], right: Iterable[np.ndarray], path: str | Path,
                 spec: ClipSpec | None = None) -> Path:
    """input | restored, one video, streamed frame by frame (even width and height, as H.264 wants)."""
    def pairs():
        for a, b in zip(left, right):
            both = np.concatenate([a, b], 1)
            yield both[: both.shape[0] // 2 * 2, : both.shape[1] // 2 * 2]

    return write_clip(path, pairs(), spec or ClipSpec())


def evaluate(restored, input, ground_truth=None, out_dir=None, overwrite: bool = False) -> dict:
    """`reelface evaluate`: metrics of a restored video against its input (and ground truth if known).

    The videos are decoded again for each pass (tracking, metrics, side by side) instead of held, so
    memory does not grow with their length."""
    from .outputs import written
    from .preflight import EVALUATION_FILES, check_evaluate

    paths = {"restored": Path(restored), "input": Path(input)}
    if ground_truth is not None:
        paths[TRUTH] = Path(ground_truth)
    out = Path(out_dir) if out_dir is not None else None
    n = check_evaluate(paths, out, overwrite)["input"].frame_count
    videos = {"input": _frames(input), "restored": _frames(restored)}
    if ground_truth is not None:
        report = measure_against_truth(videos, _frames(ground_truth), frame_count=n)
        keys = ("psnr", "face_psnr", "inner_face_psnr", "ssim", "face_ssim", "identity_cosine", "akd_px", "e_warp",
                "face_e_warp")
        report["change"] = {k: round(report["restored"][k] - report["input"][k], 4) for k in keys
                            if report["restored"][k] is not None and report["input"][k] is not None}
    else:
        report = measure_without_truth(videos, _frames(input), trackset=track_reference(input, n))
    report.update({"restored_path": str(restored), "input_path": str(input),
                   "ground_truth_path": None if ground_truth is None else str(ground_truth)})
    if out is not None:
        out.mkdir(exist_ok=True)
        movie, summary = (out / name for name in EVALUATION_FILES)
        with written(movie) as tmp:
            side_by_side(_frames(input), _frames(restored), tmp)
        report["side_by_side"] = str(movie)
        with written(summary) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return report


def _embedder():
    from tracking.embedders import DlibEmbedder

    return DlibEmbedder()


def _read_rgb(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ReelfaceError(f"cannot read image {path}: give a JPEG or PNG photo")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
