"""Where to look for faces between two whole-frame scans: around the boxes where the faces already
followed are expected (Kalman prediction), in the pixels of the scan image.

RetinaFace's cost grows with its input's pixels plus a fixed cost a run (`RUN_PIXELS`), so a frame with
a few faces is searched for a fraction of a whole scan, and where the regions would cost as much as the
whole image, the whole image is scanned (it also finds new faces). Regions are cut from the same
downscaled image a whole scan reads, so a face is detected from the same pixels and only the context
beyond the region differs.
"""

from __future__ import annotations

import numpy as np

REGION_GROWTH = 1.0  # a region reaches this many face sizes beyond the predicted box on each side (0.6
# lost low-score faces on hamilton.mp4: RetinaFace uses context around a face)
ALIGN = 32  # RetinaFace's coarsest stride: regions start and end on multiples of it, inputs are padded to it
# A detector run costs as much CPU as this many more input pixels: RetinaFace under ONNX Runtime (two
# threads, CPU time of the whole process, 2-core x86_64) fitted on inputs of 64x64 to 640x384 as 2.4 ms
# a run + 0.93 ms per 10,000 pixels. A fixed share of the image instead (60%) scanned the whole image
# where two or three faces' regions cover 60-75% of it for about 0.75-0.85 of a whole scan's cost.
RUN_PIXELS = 26_000


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


def _padded(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _aligned(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """[lo, hi) widened to multiples of ALIGN (the network's strides then fall on the same pixels as
    in a whole scan, so a face gives the same outputs) and clipped to [0, limit)."""
    lo, hi = max(0, int(np.floor(lo))), min(limit, int(np.ceil(hi)))
    if hi <= lo:  # expected outside the image
        return 0, 0
    return lo // ALIGN * ALIGN, min(limit, _padded(hi))


def detector_cost(shapes: list[tuple[int, int]]) -> int:
    """Cost, in input pixels, of detecting images of these (height, width) shapes: the detector pads each
    to multiples of ALIGN, and images of one shape are one batch, one run."""
    return sum(RUN_PIXELS + shapes.count(shape) * _padded(shape[0]) * _padded(shape[1]) for shape in set(shapes))


def search_regions(boxes: list[np.ndarray], image_shape: tuple[int, ...], scale: float) -> list[tuple[int, int, int, int]] | None:
    """Regions (x0, y0, x1, y1) of the scan image, `scale` times the frame, to search for faces
    expected at `boxes` (frame pixels); None when detecting them would cost at least as much as a whole
    scan (`detector_cost`), which also finds new faces."""
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
    if detector_cost([(y1 - y0, x1 - x0) for x0, y0, x1, y1 in regions]) >= detector_cost([(h, w)]):
        return None
    return regions
