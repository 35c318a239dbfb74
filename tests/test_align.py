"""Alignment maths, masks, and the identity round trip (align -> restore -> paste back) on real Frames."""

import cv2
import numpy as np
import pytest

from pipeline import align
from pipeline.config import load_config
from pipeline.process import restore_frames
from pipeline.restorers.identity import IdentityRestorer


def _similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]],
                    np.float32)


def test_estimate_transforms_recovers_known_similarities_batched():
    truth = np.stack([_similarity(2.0, 10, 30, -5), _similarity(0.5, -25, -100, 40)])
    inverse = align.invert_transforms(truth)
    template = np.repeat(align.FFHQ_TEMPLATE_512[None], 2, 0)
    landmarks = align.transform_points(inverse, template)  # where the template lands in each "frame"
    estimated = align.estimate_transforms(landmarks)
    assert estimated.shape == (2, 2, 3)
    np.testing.assert_allclose(estimated, truth, atol=1e-3)
    np.testing.assert_allclose(align.transform_scale(estimated), [2.0, 0.5], rtol=1e-4)


def test_least_squares_averages_noisy_landmarks():
    rng = np.random.default_rng(0)
    truth = _similarity(1.5, 5, 10, 20)
    clean = align.transform_points(align.invert_transforms(truth[None]), align.FFHQ_TEMPLATE_512[None])
    noisy = clean + rng.normal(0, 1.0, (200, 5, 2)).astype(np.float32)
    estimated = align.estimate_transforms(noisy)
    mapped = align.transform_points(estimated, np.repeat(clean, len(noisy), 0))
    # noise of 1 px per point: the fitted transform puts the true points within ~0.6 px of the template
    assert np.linalg.norm(mapped - align.FFHQ_TEMPLATE_512, axis=-1).mean() < 1.2


def test_crop_mask_is_soft_and_zero_at_the_crop_border():
    mask = align.crop_mask(feather=0.1)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-3)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert border.max() < 1e-3
    ramp = mask[256, 256:]
    assert np.all(np.diff(ramp) <= 1e-6) and ((ramp > 0.05) & (ramp < 0.95)).sum() > 20  # feathered


def test_smooth_transforms_removes_jitter_and_keeps_motion():
    rng = np.random.default_rng(1)
    n = 40
    path = np.stack([_similarity(1.0 + 0.005 * i, 0.2 * i, 2.0 * i, 0) for i in range(n)])
    jitter = path.copy()
    jitter[:, :, 2] += rng.normal(0, 1.5, (n, 2)).astype(np.float32)
    smoothed = align.smooth_transforms(jitter, 1.5)
    err_before = np.abs(jitter[5:-5, :, 2] - path[5:-5, :, 2]).mean()
    err_after = np.abs(smoothed[5:-5, :, 2] - path[5:-5, :, 2]).mean()
    assert err_after < 0.6 * err_before
    # a linear motion is kept exactly (no lag), also at the ends
    np.testing.assert_allclose(align.smooth_transforms(path, 1.5), path, atol=1e-3)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, data_dir):
    """A short clip of a real face on a smooth path (H.264 yuv420p) and its exact landmarks."""
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip
    from pipeline.synth import write_clip

    clip = make_ground_truth_clip(data_dir / "refs" / "biden" / "biden2.jpg", n_frames=4, size=256)
    path = write_clip(tmp_path_factory.mktemp("align") / "face.mp4", clip.clean)
    return path, ground_truth_trackset(clip.landmarks)


def test_identity_round_trip_keeps_everything(face_video):
    """Acceptance: identity restorer through align + paste back: outside the masks bit-identical,
    inside >= 40 dB against the decoded input."""
    from pipeline.metrics import psnr
    from pipeline.video import decode

    path, trackset = face_video
    cfg = load_config("default")
    original = [np.array(f.rgb) for f in decode(path)]
    native_before = [f.native.to_ndarray().copy() for f in decode(path)]
    frames = list(decode(path))
    restore_frames(frames, trackset, None, IdentityRestorer(), cfg)
    from pipeline.process import crop_geometry, track_transforms

    transforms = track_transforms(trackset.tracks[0])
    size, zoom = crop_geometry(transforms, IdentityRestorer())  # the crops the face path took
    transforms = align.crop_transforms(transforms, size, zoom)
    for k, frame in enumerate(frames):
        mask = align.paste_mask(transforms[k], original[k].shape, cfg.blend.feather, size)
        outside = mask == 0
        assert outside.mean() > 0.05 and (~outside).mean() > 0.2  # the head framing covers most of this clip
        after_native = frame.native.to_ndarray()
        # luma plane (first rows of the yuv420p array) untouched wherever the mask is 0
        h = original[k].shape[0]
        assert np.array_equal(after_native[:h][outside], native_before[k][:h][outside])
        assert psnr(frame.rgb, original[k], align.mask_box(mask)) >= 40.0


def test_face_crops_written_into_a_runs_array_are_the_crops_made_alone(data_dir):
    """The face path cuts a run straight into one array (no copy a crop): the same numbers as a crop made on
    its own, for a decoded frame (its colour conversion) and for a plain RGB array, enlarged and shrunk."""
    from pipeline.video import decode

    view = next(iter(decode(data_dir / "clips" / "hamilton.mp4", 0, 1))).views()[0]
    grow = np.array([[1.7, 0.05, -500.0], [-0.05, 1.7, -150.0]], np.float32)
    transforms = np.stack([grow, grow * np.float32([[0.3], [0.3]])])  # the second one downscales
    run = np.full((3, 96, 96, 3), -1.0, np.float32)  # a crop not written into it would stay -1
    got = view.face_crops(transforms, 96, run[1:])
    assert np.shares_memory(got, run) and np.array_equal(run[1:], view.face_crops(transforms, 96))
    assert np.all(run[0] == -1.0)
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    out = np.zeros((2, 64, 64, 3), np.uint8)
    assert align.warp_faces(rgb, transforms, 64, out) is out
    assert np.array_equal(out, align.warp_faces(rgb, transforms, 64)) and out.any()


def test_a_face_moving_by_fractions_of_a_pixel_shimmers_less_in_its_crops_than_with_the_cubic_cut():
    """A band-limited face (sinusoids up to 0.35 cycles a pixel, evaluated exactly) moves by sub-pixel
    steps and each frame is cut so the crop follows it: ideally every crop is the same. The float cut's
    luma varies from crop to crop less than a plain cubic warp's and is nearer the exact crop (measured:
    0.58x the cubic warp's variation and 0.55x its error); only the luma differs from the cubic warp's (R,
    G and B by the same amount)."""
    rng = np.random.default_rng(3)
    freqs = rng.uniform(-0.35, 0.35, (120, 2))
    freqs = freqs[np.hypot(*freqs.T) < 0.35]
    amps, phases = rng.normal(0, 40 / np.sqrt(len(freqs)), len(freqs)), rng.uniform(0, 2 * np.pi, len(freqs))

    def face(x, y):
        return sum(a * np.cos(2 * np.pi * (fx * x + fy * y) + p) for (fx, fy), a, p in zip(freqs, amps, phases))

    size, to_crop = 96, _similarity(1.5, 7, 0, 0)[:, :2].astype(np.float64)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    inverse = np.linalg.inv(to_crop)
    exact = face(inverse[0, 0] * xs + inverse[0, 1] * ys, inverse[1, 0] * xs + inverse[1, 1] * ys)
    gy, gx = np.mgrid[0:96, 0:96].astype(np.float64)
    tint, base = np.float32([1, 0.8, 0.5]), np.float32([128, 100, 90])  # R, G, B: the face's gain and offset
    cuts = {"cut": [], "cubic": []}
    for shift in rng.uniform(0, 1, (12, 2)):
        luma = face(gx - 10 - shift[0], gy - 10 - shift[1])  # frame pixel p shows face point p - 10 - shift
        rgb = (luma[..., None] * tint + base).astype(np.float32)
        m = np.hstack([to_crop, -(to_crop @ (10 + shift))[:, None]])
        got = align.warp_faces(rgb, m[None], size)[0]
        plain = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
        change = got - plain
        np.testing.assert_allclose(change[..., 1:], change[..., :1].repeat(2, -1), atol=1e-3)
        cuts["cut"].append(got)
        cuts["cubic"].append(plain)
    to_luma = np.float32([0.299, 0.587, 0.114])
    inner = (slice(None), slice(16, -16), slice(16, -16))
    expected = float(to_luma @ tint) * exact[inner[1:]] + float(to_luma @ base)
    shimmer, error = {}, {}
    for name, crops in cuts.items():
        lumas = (np.array(crops) @ to_luma)[inner]
        shimmer[name] = np.sqrt(np.mean(np.var(lumas, 0)))
        error[name] = np.sqrt(np.mean((lumas - expected) ** 2))
    assert shimmer["cut"] < 0.7 * shimmer["cubic"], shimmer
    assert error["cut"] < 0.7 * error["cubic"], error


def test_the_luma_is_doubled_with_opencvs_lanczos_numbers():
    """The separable 2x enlargement behind the luma cut gives cv2.resize's INTER_LANCZOS4 values away from
    the border (the cut reads a margin around the crop's footprint, so the border never reaches it)."""
    img = cv2.GaussianBlur(np.random.default_rng(5).uniform(0, 255, (41, 58)).astype(np.float32), (0, 0), 0.8)
    expected = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    got = align._double(img)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[8:-8, 8:-8], expected[8:-8, 8:-8], atol=1e-3)
