"""Quality and stability measures: PSNR, SSIM, identity cosine, landmark distance, flow-warping error.

Images are uint8 (or float 0..255) RGB arrays; a `box` (x0, y0, x1, y1) restricts a measure to a region.
"""

from __future__ import annotations

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
    """Structural similarity on luma (Gaussian window sigma 1.5, the usual K1=0.01, K2=0.03)."""
    def luma(img):
        img = _region(img, box).astype(np.float32)
        return img @ np.array([0.299, 0.587, 0.114], np.float32) if img.ndim == 3 else img

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda img: cv2.GaussianBlur(img, (11, 11), 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[5:-5, 5:-5].mean()) if min(s.shape) > 10 else float(s.mean())


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
        total, count = 0.0, 0
        for t in range(1, len(frames)):
            flow, valid = self.flows[t - 1], self.valid[t - 1].copy()
            if boxes is not None:
                box = boxes[t]
                if box is None:
                    continue
                region = np.zeros_like(valid)
                x0, y0, x1, y1 = box
                region[y0:y1, x0:x1] = True
                valid &= region
            prev = frames[t - 1].astype(np.float32) / 255.0
            pulled = cv2.remap(prev, self.grid[0] + flow[..., 0], self.grid[1] + flow[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            sq = ((frames[t].astype(np.float32) / 255.0 - pulled) ** 2).sum(-1)
            total += float(sq[valid].sum())
            count += int(valid.sum())
        return 1000.0 * total / max(count, 1)
