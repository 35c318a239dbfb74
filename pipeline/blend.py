"""From restored crops back to frames: temporal smoothing along a track, colour match, feathered paste.

Everything works on the *change* a restorer made (restored - input crop), not on the restored pixels:
- a restorer that changes nothing changes no pixel of the frame (not even by resampling twice);
- colour matching is a high-pass of that change: the input keeps its low frequencies (colour, light);
- strength scales the change; the feathered mask fades it out at the face border.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import align

COLOR_SIGMA = 16.0  # px in the 512 crop: changes slower than this are the restorer's colour, dropped
TEMPORAL_FLOW_SIZE = 128  # flow between consecutive restored crops, at this size (only for alignment)
TEMPORAL_TOLERANCE = 8.0  # grey levels: a neighbour that differs more after alignment is not averaged


def _grey(img: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (TEMPORAL_FLOW_SIZE, TEMPORAL_FLOW_SIZE), interpolation=cv2.INTER_AREA)


def temporal_smooth(restored: list[np.ndarray], weight: float) -> list[np.ndarray]:
    """Average each restored crop (float32 HxWx3, 0..255) with its flow-aligned neighbours in the run.

    `weight` in 0..1 is the share of the two neighbours; they are weighted down where they disagree with
    the centre after alignment (a blink, an occlusion), so motion is kept and flicker is removed. Uses
    one neighbour on each side: callers give one context crop beyond what they keep.
    """
    if weight <= 0 or len(restored) < 2:
        return list(restored)
    size = restored[0].shape[0]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    greys = [_grey(img) for img in restored]
    out = []
    for i, center in enumerate(restored):
        acc = center * (1.0 - weight)
        wsum = np.full(center.shape[:2], 1.0 - weight, np.float32)
        for j in (i - 1, i + 1):
            if not 0 <= j < len(restored):
                continue
            flow = dis.calc(greys[i], greys[j], None)
            flow = cv2.resize(flow, (size, size), interpolation=cv2.INTER_LINEAR) * (size / TEMPORAL_FLOW_SIZE)
            pulled = cv2.remap(restored[j], grid[1] + flow[..., 0], grid[0] + flow[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
            diff = cv2.GaussianBlur(np.abs(pulled - center).mean(-1), (0, 0), 2.0)
            w = (weight / 2) * np.exp(-0.5 * (diff / TEMPORAL_TOLERANCE) ** 2)
            acc += w[..., None] * pulled
            wsum += w
        out.append(acc / wsum[..., None])
    return out


def face_change(restored: np.ndarray, input_crop: np.ndarray, strength: float, color_match: bool) -> np.ndarray:
    """The change to paste (float32 crop), scaled by strength, without its low frequencies if colour-matched."""
    delta = restored.astype(np.float32) - input_crop.astype(np.float32)
    if color_match:
        delta -= cv2.GaussianBlur(delta, (0, 0), COLOR_SIGMA, borderType=cv2.BORDER_REFLECT101)
    return delta * float(strength)


def paste_changes(geometry, changes: list[tuple[np.ndarray, np.ndarray]], feather: float) -> np.ndarray | None:
    """The change of every face's (change crop, display->crop transform) in one picture, on its grid:
    float32 (H, W, 3), zero wherever no face reaches (give it to FrameView.paste). `geometry`
    (picture.Geometry) maps the picture's grid to display space, where the transforms live.

    Overlapping faces share the overlap in proportion to their masks: the change is sum(m * d) / sum(m)
    times the combined mask 1 - prod(1 - m) (one face: m * d). None when no face reaches the picture.
    """
    h, w = geometry.shape
    delta = np.zeros((h, w, 3), np.float32)
    weight = np.zeros((h, w), np.float32)
    coverage = np.zeros((h, w), np.float32)
    masks: dict[int, np.ndarray] = {}
    for change, transform in changes:
        size = change.shape[0]
        m_grid = align.compose(transform[None], geometry.to_display)[0]
        box = align.crop_box(m_grid, size, (h, w))
        if box is None:
            continue
        x0, y0, x1, y1 = box
        # the warp into the box only: the inverse map samples crop pixels for box pixels
        shifted = align.shift_origin(m_grid, x0, y0)
        if size not in masks:
            masks[size] = align.crop_mask(size, feather=feather)
        m = align.unwarp(masks[size], shifted, (y1 - y0, x1 - x0))
        d = align.unwarp(change.astype(np.float32), shifted, (y1 - y0, x1 - x0), cv2.INTER_CUBIC)
        delta[y0:y1, x0:x1] += m[..., None] * d
        weight[y0:y1, x0:x1] += m
        coverage[y0:y1, x0:x1] = 1 - (1 - coverage[y0:y1, x0:x1]) * (1 - m)
    if not coverage.any():
        return None
    return delta / np.maximum(weight, 1e-6)[..., None] * coverage[..., None]
