"""Blending: colour match keeps the input's low frequencies, strength, feathered paste, temporal smoothing."""

import numpy as np
import pytest

from pipeline import align, blend
from pipeline.picture import Geometry


def test_colour_match_drops_a_restorer_colour_shift_and_keeps_detail():
    rng = np.random.default_rng(0)
    crop = rng.integers(60, 200, (512, 512, 3)).astype(np.uint8)
    detail = rng.normal(0, 10, (512, 512, 3)).astype(np.float32)
    restored = crop + 25.0 + detail  # a global colour shift plus fine detail
    change = blend.face_change(restored, crop, strength=1.0, color_match=True)
    assert abs(float(change.mean())) < 1.0  # the shift is gone
    assert np.corrcoef(change.ravel(), detail.ravel())[0, 1] > 0.95  # the detail stays
    raw = blend.face_change(restored, crop, strength=1.0, color_match=False)
    assert abs(float(raw.mean()) - 25.0) < 1.0


def test_strength_scales_the_change_and_zero_keeps_the_input():
    crop = np.full((512, 512, 3), 100, np.uint8)
    restored = crop + np.float32(10)
    assert np.allclose(blend.face_change(restored, crop, 0.5, False), 5.0)
    assert not blend.face_change(restored, crop, 0.0, True).any()


def test_paste_changes_feathers_inside_the_face_and_leaves_the_rest():
    grid = Geometry(shape=(300, 400), to_display=np.eye(2, 3), display_shape=(300, 400))
    landmarks = align.FFHQ_TEMPLATE_512[None] * 0.3 + np.array([120, 60], np.float32)
    transform = align.estimate_transforms(landmarks)[0]
    change = np.full((512, 512, 3), 40.0, np.float32)
    part, (top, left) = blend.paste_changes(grid, [(change, transform)], feather=0.1)
    delta = np.zeros((300, 400, 3), np.float32)
    delta[top:top + part.shape[0], left:left + part.shape[1]] = part
    assert part.shape[0] * part.shape[1] < 0.5 * delta[..., 0].size  # only the face's box is computed
    centre = landmarks[0].mean(0).astype(int)
    assert abs(delta[centre[1], centre[0]].mean() - 40) < 1e-3  # full change in the middle of the face
    mask = align.paste_mask(transform, (300, 400), 0.1)
    assert not delta[mask == 0].any()  # nothing outside the face
    ramp = delta[centre[1], centre[0]:, 0] / 40
    assert ((ramp > 0.05) & (ramp < 0.95)).sum() >= 5  # a soft edge, not a hard cut
    assert blend.paste_changes(grid, [(change, align.estimate_transforms(landmarks + 5000)[0])], 0.1) is None


@pytest.mark.parametrize("zoom, most, most_luma", [(1.16, 0.23, 0.15), (1.5, 0.07, 0.032)])
def test_a_crop_pasted_back_keeps_little_of_the_frame_it_replaced(zoom, most, most_luma):
    """A restorer's output replaces the face: what the cut and the paste lose of the frame (fine noise, the
    hardest case) stays in the output whatever the restorer did, so the round trip must carry most of it at
    the zooms faces are cropped at (a cubic paste kept 28% and 11% back; of the luma's noise 18.8% and 4.0%
    stayed with a cubic cut, 12.4% and 2.5% with the cut's Lanczos luma)."""
    rng = np.random.default_rng(3)
    frame = rng.normal(128, 10, (240, 240, 3)).astype(np.float32)
    grid = Geometry(shape=(240, 240), to_display=np.eye(2, 3), display_shape=(240, 240))
    size = int(round(0.6 * 240 * zoom / 16)) * 16
    landmarks = align.FFHQ_TEMPLATE_512[None] * (size / 512 / zoom) + np.float32(0.37)
    landmarks += (240 - size / zoom) / 2
    transform = align.estimate_transforms(landmarks, size)[0]
    assert abs(float(align.transform_scale(transform[None])[0]) - zoom) < 0.02
    crop = align.warp_faces(frame, transform[None], size)[0]
    flat = np.full_like(crop, 128.0)  # a restorer that removed every trace of the noise
    part, (top, left) = blend.paste_changes(grid, [(flat - crop, transform)], feather=0.1)
    out = frame[top:top + part.shape[0], left:left + part.shape[1]] + part
    centre = out[part.shape[0] // 3: 2 * part.shape[0] // 3, part.shape[1] // 3: 2 * part.shape[1] // 3]
    assert float(np.sqrt(((centre - 128.0) ** 2).mean())) < most * 10
    to_luma = np.float32([0.299, 0.587, 0.114])
    luma, luma_before = (centre - 128.0) @ to_luma, (frame - 128.0) @ to_luma
    assert float(np.sqrt((luma ** 2).mean() / (luma_before ** 2).mean())) < most_luma
