"""A deliberately flickery stand-in restorer, for tests and benchmarks only (not in the registry).

Per-frame restorers (osdface, onnx) invent fine detail anew on every frame, so it flickers. This one
reproduces just that: the input crop plus fine random detail (Gaussian noise blurred to ~1 px grain)
drawn from a generator seeded by the crop's own pixels, so each frame gets different detail while the
same crop always gives the same output (as the Restorer protocol asks). What a temporal stage removes
from its output is what it would remove from a real per-frame restorer's flicker.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import torch

from .base import CROP_SIZE, TrackRefs, check_crops

DETAIL_LEVEL = 6.0  # grey levels (0..255), standard deviation of the added detail
DETAIL_GRAIN = 1.0  # px in the 512 crop: Gaussian blur of the noise (fine detail, not single-pixel noise)


class FlickerRestorer:
    name = "flicker"
    temporal_radius = 0
    crop_size = CROP_SIZE  # as the per-frame models it stands in for (trained on 512 crops)

    def __init__(self, restore_cfg=None, level: float = DETAIL_LEVEL):
        self.level = level

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None) -> torch.Tensor:
        check_crops(crops, self.crop_size)
        out = crops.clone()
        for i, crop in enumerate(crops):
            pixels = crop.mul(255).round().to(torch.uint8).numpy()
            rng = np.random.default_rng(zlib.crc32(pixels.tobytes()))
            detail = cv2.GaussianBlur(rng.standard_normal(pixels.shape[1:]).astype(np.float32), (0, 0), DETAIL_GRAIN)
            detail *= self.level / 255.0 / max(float(detail.std()), 1e-6)
            out[i] = (crop + torch.from_numpy(detail)[None]).clamp_(0, 1)
        return out
