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

COLOR_SIGMA = 1 / 32  # of the crop size (16 px at 512): changes slower than this are the restorer's colour, dropped


def face_change(restored: np.ndarray, input_crop: np.ndarray, strength: float, color_match: bool) -> np.ndarray:
    """The change to paste (float32 crop), scaled by strength, without its low frequencies if colour-matched."""
    delta = np.subtract(restored, input_crop, dtype=np.float32)
    if color_match:
        delta -= cv2.GaussianBlur(delta, (0, 0), COLOR_SIGMA * delta.shape[0], borderType=cv2.BORDER_REFLECT101)
    delta *= float(strength)
    return delta


def paste_changes(geometry, changes: list[tuple[np.ndarray, np.ndarray]], feather: float
                  ) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The change of every face's (change crop, display->crop transform) in one picture, on its grid:
    float32 (h, w, 3) over the box the faces reach and that box's top-left corner (row, column) in the
    grid (give both to FrameView.paste). `geometry` (picture.Geometry) maps the picture's grid to display
    space, where the transforms live. Only the faces' box is allocated and filled: a 1080p frame is
    25 MB of float32 a plane, most of it far from any face.

    Overlapping faces share the overlap in proportion to their masks: the change is sum(m * d) / sum(m)
    times the combined mask 1 - prod(1 - m) (one face: m * d). None when no face reaches the picture.
    """
    placed = []
    for change, transform in changes:
        m_grid = align.compose(transform[None], geometry.to_display)[0]
        box = align.crop_box(m_grid, change.shape[0], geometry.shape)
        if box is not None:
            placed.append((change, m_grid, box))
    if not placed:
        return None
    boxes = np.array([box for _, _, box in placed])
    left, top = boxes[:, :2].min(0)
    right, bottom = boxes[:, 2:].max(0)
    delta = np.zeros((bottom - top, right - left, 3), np.float32)
    weight = np.zeros(delta.shape[:2], np.float32)
    coverage = np.zeros(delta.shape[:2], np.float32)
    for change, m_grid, (x0, y0, x1, y1) in placed:
        # the warp into the face's own box only: the inverse map samples crop pixels for box pixels
        shifted = align.shift_origin(m_grid, x0, y0)
        m = align.unwarp(align.crop_mask(change.shape[0], feather=feather), shifted, (y1 - y0, x1 - x0))
        # Lanczos' kernel: what the cut and this paste lose of the frame stays in the output whatever the
        # restorer removed (frame - paste(cut(frame))). Of white noise, with a cubic cut, the round trip
        # kept 28% (rms) at 1.16 crop px a frame px (a large face, its crop at the size cap) and 11% at 1.5
        # with a cubic paste, 21% and 5% with this one, at no cost that could be measured. The cut's luma
        # goes through Lanczos' kernel too (align.warp_faces): of the luma's noise the round trip keeps 12%
        # and 2.5% instead of 19% and 4% (tests/test_blend.py; benchmarks/README.md, issue 10, stops 18-20)
        d = align.unwarp(np.asarray(change, np.float32), shifted, (y1 - y0, x1 - x0), cv2.INTER_LANCZOS4)
        at = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        delta[at] += np.multiply(d, m[..., None], out=d)
        weight[at] += m
        coverage[at] = 1 - (1 - coverage[at]) * (1 - m)
    if not coverage.any():
        return None
    # in place: a new (h, w, 3) float32 array for each step cost more than the arithmetic
    delta /= np.maximum(weight, 1e-6)[..., None]
    delta *= coverage[..., None]
    return delta, (int(top), int(left))
