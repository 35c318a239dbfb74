"""Quality and stability measures: PSNR, SSIM, identity cosine, landmark distance, flow-warping error.

E_warp, the one definition every report uses (`warp_errors`): optical flow (DIS, both directions) is
computed on the *input* video; every video being compared (input, restored, a baseline) is warped with
that same flow, previous frame onto current; pixels where the forward and backward flows disagree
(occlusions) are left out; the face figure counts only pixels inside each frame's face box.

Images are uint8 (or float 0..255) RGB arrays; a `box` (x0, y0, x1, y1) restricts a measure to a region.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def _region(img: np.ndarray, box: Box | None) -> np.ndarray:
    if box is None:
        return img
    x0, y0, x1, y1 = box
    return img[y0:y1, x0:x1]


def psnr(a: np.ndarray, b: np.ndarray, box: Box | None = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); capped at 100 dB for identical images."""
    diff = _region(a, box).astype(np.float64) - _region(b, box).astype(np.float64)
    mse = float((diff ** 2).mean())
    return 100.0 if mse <= 1e-10 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, box: Box | None = None) -> float:
    """Structural similarity on luma (scikit-image: Gaussian window sigma 1.5, K1=0.01, K2=0.03, population
    statistics, as in Wang et al. 2004); the window shrinks to fit regions under 11 px."""
    from skimage.metrics import structural_similarity

    def luma(img):
        img = _region(img, box).astype(np.float64)
        return img @ np.array([0.299, 0.587, 0.114]) if img.ndim == 3 else img

    x, y = luma(a), luma(b)
    side = min(x.shape)
    return float(structural_similarity(x, y, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, win_size=min(11, side - 1 + side % 2)))


RING_WIDTH = 0.05  # cycles a pixel: frequency_response's rings, out to the Nyquist frequency


def frequency_response(frames: list[np.ndarray], truths: list[np.ndarray], boxes: list[Box]) -> list[float]:
    """The luma's gain against the truth per ring of radial frequency (RING_WIDTH wide, from 0 to 0.5
    cycles a pixel), over a square about each box's centre (the smallest box's side, Hann-windowed):
    sum Re(F_out conj(F_truth)) / sum |F_truth|^2 over the ring and the frames. 1 is the truth's own
    amplitude; under 1, detail lost; over 1, amplified beyond the truth (overshoot). What the output has
    that the truth lacks (noise, ringing out of phase) averages out of the cross-spectrum, so this is the
    transfer function of whatever made `frames` from `truths`, as far as it is linear."""
    side = min(min(b[2] - b[0], b[3] - b[1]) for b in boxes)
    side -= side % 2
    window = np.outer(np.hanning(side), np.hanning(side))
    freq = np.hypot(np.fft.fftfreq(side)[:, None], np.fft.fftfreq(side)[None, :])
    rings = round(0.5 / RING_WIDTH)
    ring = np.minimum((freq / RING_WIDTH).astype(np.intp), rings).ravel()  # the corners: one more ring, dropped
    cross, power = np.zeros(rings + 1), np.zeros(rings + 1)
    for frame, truth, (x0, y0, x1, y1) in zip(frames, truths, boxes):
        h, w = truth.shape[:2]
        top = int(np.clip((y0 + y1) // 2 - side // 2, 0, h - side))
        left = int(np.clip((x0 + x1) // 2 - side // 2, 0, w - side))

        def spectrum(img):
            square = np.ascontiguousarray(img[top:top + side, left:left + side], np.float32)
            grey = cv2.cvtColor(square, cv2.COLOR_RGB2GRAY).astype(np.float64)
            return np.fft.fft2((grey - grey.mean()) * window).ravel()

        out, ref = spectrum(frame), spectrum(truth)
        cross += np.bincount(ring, (out * np.conj(ref)).real, rings + 1)
        power += np.bincount(ring, np.abs(ref) ** 2, rings + 1)
    return [float(c / max(p, 1e-12)) for c, p in zip(cross[:rings], power[:rings])]


def inner_face_box(landmarks: np.ndarray, shape) -> Box:
    """Eyes, nose and mouth: the landmarks' box grown by half its larger side on every side (in the frame)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    pad = 0.5 * float((hi - lo).max())
    h, w = shape[:2]
    return (max(int(lo[0] - pad), 0), max(int(lo[1] - pad), 0), min(int(np.ceil(hi[0] + pad)), w),
            min(int(np.ceil(hi[1] + pad)), h))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embedding vectors."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def landmark_distance(a: np.ndarray, b: np.ndarray, normalise_by: float | None = None) -> float:
    """Average keypoint distance (AKD): mean Euclidean distance of corresponding landmarks, in pixels
    (or divided by `normalise_by`, e.g. the inter-ocular distance)."""
    d = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1).mean())
    return d / normalise_by if normalise_by else d


class FlowField:
    """Backward flows between consecutive frames of a reference video, with occlusion masks.

    E_warp (Lai et al., 2018) measures the output's flicker with the motion of a *reference* (ground
    truth, or the input when there is none), so a restorer cannot lower it by blurring the motion away.
    """

    def __init__(self, frames: list[np.ndarray]):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        h, w = greys[0].shape
        grid = np.mgrid[0:h, 0:w].astype(np.float32)
        self.grid = (grid[1], grid[0])
        self.flows: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        for prev, cur in zip(greys, greys[1:]):
            back = dis.calc(cur, prev, None)  # cur(x) ~ prev(x + back)
            fwd = dis.calc(prev, cur, None)
            # forward-backward consistency: where the two disagree the pixel was (dis)occluded
            fwd_at = cv2.remap(fwd, self.grid[0] + back[..., 0], self.grid[1] + back[..., 1], cv2.INTER_LINEAR)
            err = np.linalg.norm(back + fwd_at, axis=-1)
            mag = np.linalg.norm(back, axis=-1) ** 2 + np.linalg.norm(fwd_at, axis=-1) ** 2
            self.flows.append(back)
            self.valid.append(err ** 2 < 0.01 * mag + 0.5)

    def warp_error(self, frames: list[np.ndarray], boxes: list[Box | None] | None = None) -> float:
        """Mean squared difference (RGB, 0..1 scale, x1000 as usually reported) between each frame and
        the previous one warped to it, over non-occluded pixels (inside the frame's box when given)."""
        total, count = self.warp_sums(frames, boxes)
        return 1000.0 * total / max(count, 1)

    def warp_sums(self, frames: list[np.ndarray], boxes: list[Box | None] | None = None) -> tuple[float, int]:
        """warp_error's sum of squared differences and its pixel count, to pool clips measured a few
        frames at a time (a streamed video: one FlowField per pair of frames)."""
        total, count = 0.0, 0
        for t in range(1, len(frames)):
            if boxes is not None and boxes[t] is None:
                continue
            sq, valid = self.squared_change(frames[t - 1], frames[t], t - 1)
            if boxes is not None:
                valid &= _box_mask(valid.shape, boxes[t])
            total += float(sq[valid].sum())
            count += int(valid.sum())
        return total, count

    def squared_change(self, prev: np.ndarray, cur: np.ndarray, pair: int) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: the squared difference (RGB, 0..1 scale) between `cur` and `prev` warped to it with
        the flow of frame pair `pair`, and where that flow is valid (a new array: callers narrow it)."""
        flow = self.flows[pair]
        pulled = cv2.remap(prev.astype(np.float32) / 255.0, self.grid[0] + flow[..., 0], self.grid[1] + flow[..., 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return ((cur.astype(np.float32) / 255.0 - pulled) ** 2).sum(-1), self.valid[pair].copy()


def _box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    region = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    region[y0:y1, x0:x1] = True
    return region


class StreamedWarpError:
    """E_warp of several videos fed one frame at a time with the reference's frame (bounded memory:
    only the previous frames are kept); pools exactly as FlowField.warp_error over the whole clip."""

    def __init__(self, names: Iterable[str]):
        self.sums = {(name, face): [0.0, 0] for name in names for face in (False, True)}
        self.previous: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
        self.has_face = False

    def add(self, reference: np.ndarray, frames: dict[str, np.ndarray], face_box: Box | None) -> None:
        """The next frame of the reference and of each video, and its face box (None: no face)."""
        self.has_face |= face_box is not None
        if self.previous is not None:
            ref_prev, prev = self.previous
            field = FlowField([ref_prev, reference])
            for name, frame in frames.items():
                # one warp per video serves the whole frame and the face box
                sq, valid = field.squared_change(prev[name], frame, 0)
                regions = {False: valid}
                if face_box is not None:
                    regions[True] = valid & _box_mask(valid.shape, face_box)
                for face, region in regions.items():
                    self.sums[(name, face)][0] += float(sq[region].sum())
                    self.sums[(name, face)][1] += int(region.sum())
        self.previous = (reference, dict(frames))

    def errors(self, name: str) -> dict[str, float | None]:
        """{"e_warp", "face_e_warp"} of one video; face_e_warp is None when no frame had a face box."""
        def error(face: bool) -> float:
            total, count = self.sums[(name, face)]
            return round(1000.0 * total / max(count, 1), 4)

        return {"e_warp": error(False), "face_e_warp": error(True) if self.has_face else None}


MOTION_MARGIN = 3  # px; pixels that far from where a frame's source leaves the previous frame are left out


def motion_warp_error(frames: list[np.ndarray], motion: np.ndarray, boxes: list[Box]) -> float:
    """E_warp along a known motion (a generated clip's, where the camera path is exact): each frame's
    previous one carried onto it by the exact affine motion[t] @ inverse(motion[t - 1]) (motion[t] maps the
    scene to frame t; Lanczos), the mean squared difference inside frame t's box, over the pixels whose
    source lies inside the previous frame, in FlowField.warp_error's units. No flow is estimated, so none
    of its error is counted: a video steady on the scene reads only the resampling's own small error, and
    what it reads above that is flicker. (FlowField's input-flow E_warp, all that real footage allows, also
    counts the flow's sub-pixel error times the video's sharpness.)"""
    h, w = frames[0].shape[:2]
    total, count = 0.0, 0
    for t in range(1, len(frames)):
        step = (np.vstack([motion[t], (0, 0, 1)]) @ np.linalg.inv(np.vstack([motion[t - 1], (0, 0, 1)])))[:2]
        inside = cv2.warpAffine(np.ones((h, w), np.uint8), step, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        inside = cv2.erode(inside, np.ones((2 * MOTION_MARGIN + 1,) * 2, np.uint8))
        carried = cv2.warpAffine(frames[t - 1].astype(np.float32), step, (w, h), flags=cv2.INTER_LANCZOS4,
                                 borderMode=cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = boxes[t]
        valid = inside[y0:y1, x0:x1] > 0
        diff = (frames[t][y0:y1, x0:x1].astype(np.float32) - carried[y0:y1, x0:x1])[valid] / 255.0
        total += float(np.square(diff).sum())
        count += int(valid.sum())
    return 1000.0 * total / max(count, 1)


def warp_errors(input_frames: list[np.ndarray], videos: dict[str, list[np.ndarray]],
                face_boxes: list[Box | None]) -> dict[str, dict[str, float | None]]:
    """E_warp of each named video, whole frame and face (see the module docstring): {name: {"e_warp",
    "face_e_warp"}}. face_boxes[t] is frame t's face box, None where it has none; face_e_warp is None
    when no frame has one. (Streams: StreamedWarpError, which this feeds.)"""
    warp = StreamedWarpError(videos)
    for t, (reference, box) in enumerate(zip(input_frames, face_boxes)):
        warp.add(reference, {name: frames[t] for name, frames in videos.items()}, box)
    return {name: warp.errors(name) for name in videos}
