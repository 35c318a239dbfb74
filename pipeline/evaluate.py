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
from collections.abc import Iterable
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


def _largest_face(faces):
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def _detector():
    from tracking.detectors import RetinaFaceDetector

    return RetinaFaceDetector(threshold=0.6, device="cpu")


def make_ground_truth_clip(photo: str | Path | np.ndarray, n_frames: int = 24, size: int | tuple[int, int] = 512,
                           seed: int = 0, detector=None, face_size: float | None = None,
                           degradation: str = "chain") -> GroundTruthClip:
    """A clean clip of the photo's face on a smooth path, its degraded version, exact landmarks and boxes.

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
                           boxes.astype(np.float32))


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


IDENTITY_SAMPLES = 8  # frames per video whose identity embedding is compared (dlib: ~0.1-0.3 s each)


def _samples(n: int, k: int) -> set[int]:
    return set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist())


def measure_against_truth(videos: dict[str, list[np.ndarray]], truth: list[np.ndarray],
                          detector=None, embedder=None) -> dict:
    """Per named video: PSNR/SSIM (frame and face), identity cosine, AKD against the ground truth, and
    E_warp with the motion of videos["input"] (which must be there).

    Faces are the detector's boxes on the ground truth; identity is compared on IDENTITY_SAMPLES frames
    spread over the clip."""
    detector = detector or _detector()
    embedder = embedder or _embedder()
    truth_faces = [_largest_face(f) for f in detector.detect(truth)]
    boxes = [_face_box(f, truth[0].shape) if f is not None else None for f in truth_faces]
    sampled = _samples(len(truth), IDENTITY_SAMPLES)
    truth_emb = [embedder.embed(t, [f])[0] if f is not None and k in sampled else None
                 for k, (t, f) in enumerate(zip(truth, truth_faces))]
    if "input" not in videos:
        raise ValueError("measure_against_truth needs the 'input' video: E_warp uses its motion")
    warp = metrics.warp_errors(videos["input"], videos, boxes)
    out = {"frames": len(truth), "faces_in_truth": sum(b is not None for b in boxes)}
    for name, frames in videos.items():
        if len(frames) != len(truth):
            raise ReelfaceError(f"{name} has {len(frames)} frames, the ground truth {len(truth)}: "
                                "evaluate the same clip")
        found = detector.detect(frames)
        ident, akd, face_psnr, face_ssim, inner_psnr = [], [], [], [], []
        for img, gt, gt_face, box, emb, faces in zip(frames, truth, truth_faces, boxes, truth_emb, found):
            if box is None:
                continue
            face_psnr.append(metrics.psnr(img, gt, box))
            face_ssim.append(metrics.ssim(img, gt, box))
            inner_psnr.append(metrics.psnr(img, gt, metrics.inner_face_box(gt_face.landmarks, img.shape)))
            if emb is not None:
                ident.append(metrics.cosine(embedder.embed(img, [gt_face])[0], emb))
            match = _match(faces, box)
            akd.append(metrics.landmark_distance(match.landmarks, gt_face.landmarks) if match is not None else None)
        out[name] = {
            "psnr": _mean(metrics.psnr(a, b) for a, b in zip(frames, truth)),
            "ssim": _mean(metrics.ssim(a, b) for a, b in zip(frames, truth)),
            "face_psnr": _mean(face_psnr), "face_ssim": _mean(face_ssim), "inner_face_psnr": _mean(inner_psnr),
            "identity_cosine": _mean(ident), "akd_px": _mean(akd),
            "faces_detected": sum(a is not None for a in akd),
            **warp[name],
        }
    return out


def _link_tracks(faces_per_frame, min_iou: float = 0.3) -> list[list[tuple[int, object]]]:
    """Greedy IoU linking of detections in consecutive frames: enough to follow faces on short clips."""
    from tracking.detectors import box_iou

    tracks: list[list[tuple[int, object]]] = []
    open_tracks: list[list[tuple[int, object]]] = []
    for t, faces in enumerate(faces_per_frame):
        next_open = []
        for face in faces:
            best = max(open_tracks, default=None,
                       key=lambda tr: float(box_iou(tr[-1][1].box[None], face.box[None])[0, 0]))
            if best is not None and float(box_iou(best[-1][1].box[None], face.box[None])[0, 0]) >= min_iou:
                # by identity: list.remove compares Face dataclasses, whose arrays have no single truth value
                open_tracks = [tr for tr in open_tracks if tr is not best]
                best.append((t, face))
                next_open.append(best)
            else:
                track = [(t, face)]
                tracks.append(track)
                next_open.append(track)
        open_tracks = next_open
    return tracks


def measure_without_truth(videos: dict[str, list[np.ndarray]], reference: list[np.ndarray],
                          detector=None, embedder=None, min_track: int = 5) -> dict:
    """Identity consistency along each face track (mean cosine of each face to its track's mean) and
    E_warp with the reference's (the input's) motion, for each named video; faces found on the reference."""
    detector = detector or _detector()
    embedder = embedder or _embedder()
    tracks = [t for t in _link_tracks(detector.detect(reference)) if len(t) >= min_track]
    boxes: list = [None] * len(reference)
    for track in tracks:  # E_warp over the largest face of each frame
        for t, face in track:
            if boxes[t] is None or face.size > (boxes[t][2] - boxes[t][0]):
                boxes[t] = _face_box(face, reference[0].shape)
    warp = metrics.warp_errors(reference, videos, boxes)
    out: dict = {"frames": len(reference), "tracks": len(tracks)}
    for name, frames in videos.items():
        consistency = []
        for track in tracks:
            emb = np.stack([embedder.embed(frames[t], [face])[0] for t, face in track])
            mean = emb.mean(0)
            consistency.append(float((emb @ (mean / max(np.linalg.norm(mean), 1e-9))).mean()))
        out[name] = {
            "identity_consistency": _mean(consistency),
            "identity_consistency_per_track": [round(c, 4) for c in consistency],
            **warp[name],
        }
    return out


def _read_video(path: str | Path) -> list[np.ndarray]:
    from .video import decode

    return [np.array(frame.rgb) for frame in decode(path)]


def side_by_side(left: Iterable[np.ndarray], right: Iterable[np.ndarray], path: str | Path,
                 spec: ClipSpec | None = None) -> Path:
    """input | restored, one video, streamed frame by frame (even width and height, as H.264 wants)."""
    def pairs():
        for a, b in zip(left, right):
            both = np.concatenate([a, b], 1)
            yield both[: both.shape[0] // 2 * 2, : both.shape[1] // 2 * 2]

    return write_clip(path, pairs(), spec or ClipSpec())


def evaluate(restored, input, ground_truth=None, out_dir=None, overwrite: bool = False) -> dict:
    """`reelface evaluate`: metrics of a restored video against its input (and ground truth if known)."""
    from .outputs import written
    from .preflight import EVALUATION_FILES, check_evaluate

    videos = {"restored": Path(restored), "input": Path(input)}
    if ground_truth is not None:
        videos["ground truth"] = Path(ground_truth)
    out = Path(out_dir) if out_dir is not None else None
    check_evaluate(videos, out, overwrite)
    restored_frames, input_frames = _read_video(restored), _read_video(input)
    videos = {"input": input_frames, "restored": restored_frames}
    if ground_truth is not None:
        report = measure_against_truth(videos, _read_video(ground_truth))
        keys = ("psnr", "face_psnr", "inner_face_psnr", "ssim", "face_ssim", "identity_cosine", "akd_px", "e_warp",
                "face_e_warp")
        report["change"] = {k: round(report["restored"][k] - report["input"][k], 4) for k in keys
                            if report["restored"][k] is not None and report["input"][k] is not None}
    else:
        report = measure_without_truth(videos, input_frames)
    report.update({"restored_path": str(restored), "input_path": str(input),
                   "ground_truth_path": None if ground_truth is None else str(ground_truth)})
    if out is not None:
        out.mkdir(exist_ok=True)
        movie, summary = (out / name for name in EVALUATION_FILES)
        with written(movie) as tmp:
            side_by_side(input_frames, restored_frames, tmp)
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
