"""Where to look for faces between two whole-frame scans: around the boxes where the faces already
followed are expected (Kalman prediction), in the pixels of the scan image.

RetinaFace's cost grows with its input's pixels plus about a millisecond a run (this 2-core machine:
640x384 ~30 CPU ms, 256x256 ~7, 160x160 ~4), so a frame with a few faces is searched for a fraction of
a whole scan. Regions are cut from the same downscaled image a whole scan reads, so a face is detected
from the same pixels and only the context beyond the region differs.
"""

from __future__ import annotations

import numpy as np

REGION_GROWTH = 1.0  # a region reaches this many face sizes beyond the predicted box on each side (0.6
# lost low-score faces on hamilton.mp4: RetinaFace uses context around a face)
WHOLE_FRACTION = 0.6  # regions covering more of the image than this: the whole image costs about as much
ALIGN = 32  # RetinaFace's coarsest stride: regions start and end on multiples of it


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def merged_boxes(boxes: list[np.ndarray]) -> list[np.ndarray]:
    """Two regions become their bounding box when that has no more pixels than both apart (they
    overlap or touch): one run instead of two, and a face between them is not cut by either edge."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                union = np.concatenate([np.minimum(boxes[i][:2], boxes[j][:2]), np.maximum(boxes[i][2:], boxes[j][2:])])
                if _area(union) <= _area(boxes[i]) + _area(boxes[j]):
                    boxes[i] = union
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _aligned(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """[lo, hi) widened to multiples of ALIGN (the network's strides then fall on the same pixels as
    in a whole scan, so a face gives the same outputs) and clipped to [0, limit)."""
    lo, hi = max(0, int(np.floor(lo))), min(limit, int(np.ceil(hi)))
    if hi <= lo:  # expected outside the image
        return 0, 0
    return lo // ALIGN * ALIGN, min(limit, -(-hi // ALIGN) * ALIGN)


def search_regions(boxes: list[np.ndarray], image_shape: tuple[int, ...], scale: float) -> list[tuple[int, int, int, int]] | None:
    """Regions (x0, y0, x1, y1) of the scan image, `scale` times the frame, to search for faces
    expected at `boxes` (frame pixels); None when they would cover so much of the image that a whole
    scan costs about as much (and also finds new faces)."""
    h, w = image_shape[:2]
    grown = []
    for box in boxes:
        b = np.asarray(box, np.float64) * scale
        size = b[2:] - b[:2]
        grown.append(np.concatenate([b[:2] - REGION_GROWTH * size, b[2:] + REGION_GROWTH * size]))
    regions = []
    for b in merged_boxes(grown):
        x0, x1 = _aligned(b[0], b[2], w)
        y0, y1 = _aligned(b[1], b[3], h)
        if x1 > x0 and y1 > y0:
            regions.append((x0, y0, x1, y1))
    if sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions) > WHOLE_FRACTION * h * w:
        return None
    return regions
