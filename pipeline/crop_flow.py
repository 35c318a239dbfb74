"""Dense optical flow between a track's face crops: one setting for fusion and the temporal stage.

Crops are enlarged about 2x from the frame (process.crop_geometry), so flow is computed at half the crop
size, the face's own resolution: nothing finer exists to follow. DIS's MEDIUM preset, because FAST
stops refining at a quarter of the image's resolution: on real faces (expressions, head turns) its
misalignment was most of the temporal change fusion added (face E_warp over the input's 2.06 on hamilton
with FAST at 128 px, 0.60 with MEDIUM at half crop size; benchmarks/README.md, issue 10).
"""

from __future__ import annotations

import cv2

MAX_SIZE = 256  # px; larger faces have their flow at this size (the cost grows with its square)
MIN_SIZE = 32


def flow_size(crop_size: int) -> int:
    """Side of the images flow is computed on for crops of crop_size."""
    return min(max(crop_size // 2, MIN_SIZE), MAX_SIZE)


def flow_engine() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
