"""Metrics: known values and the directions that matter."""

import numpy as np
import pytest

from pipeline import metrics


def test_psnr_known_value_and_box():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[:5] = 10  # half the pixels off by 10: mse 50
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / 50))
    assert metrics.psnr(a, b, (0, 5, 10, 10)) == 100.0  # identical inside the box


def test_ssim_orders_degradations():
    import cv2

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (64, 64, 3)).astype(np.uint8), (0, 0), 2)
    assert metrics.ssim(img, img) == pytest.approx(1.0)
    mild = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    strong = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(img, mild) > metrics.ssim(img, strong)


def test_cosine_and_landmark_distance():
    assert metrics.cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert metrics.cosine([1, 2], [2, 4]) == pytest.approx(1.0)
    a = np.zeros((5, 2))
    assert metrics.landmark_distance(a, a + [3, 4]) == pytest.approx(5.0)
    assert metrics.landmark_distance(a, a + [3, 4], normalise_by=10) == pytest.approx(0.5)


def test_frequency_response_is_the_transfer_function_whatever_noise_is_added():
    import cv2

    rng = np.random.default_rng(3)
    truths = [np.repeat(rng.normal(128, 40, (136, 136, 1)), 3, 2).astype(np.float32) for _ in range(8)]
    sigma = 1.0
    blurred = [cv2.GaussianBlur(t, (0, 0), sigma) for t in truths]
    noisy = [b + np.repeat(rng.normal(0, 20, (136, 136, 1)), 3, 2).astype(np.float32) for b in blurred]
    boxes = [(8, 8, 128, 128)] * 8
    gain = metrics.frequency_response(noisy, truths, boxes)
    centres = (np.arange(len(gain)) + 0.5) * metrics.RING_WIDTH
    transfer = np.exp(-2 * np.pi ** 2 * sigma ** 2 * centres ** 2)
    # within the rings' width and the noise's share of 8 frames: the noise (as strong as the blurred
    # signal at 0.2 cycles a px) adds nothing, as a ratio of powers would (0.25 and more above 0.3)
    # (the lowest ring holds the bins next to the mean the window has removed, which read low: left out)
    assert np.abs(np.array(gain) - transfer)[1:].max() < 0.03
    assert metrics.frequency_response(truths, truths, boxes) == pytest.approx([1.0] * len(gain))
    # an unsharp mask amplifies the middle beyond the truth
    sharpened = [2 * t - b for t, b in zip(truths, blurred)]
    mid = metrics.frequency_response(sharpened, truths, boxes)[2]
    assert mid == pytest.approx(2 - transfer[2], abs=0.05) and mid > 1.2


def test_warp_error_follows_motion_and_catches_flicker():
    import cv2

    rng = np.random.default_rng(2)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (96, 160, 3)).astype(np.uint8), (0, 0), 1.5)
    moving = [np.roll(texture, 2 * t, axis=1)[:, 20:140] for t in range(4)]  # steady pan
    flow = metrics.FlowField(moving)
    steady = flow.warp_error(moving)
    flicker = [np.clip(f.astype(int) + (12 if t % 2 else -12), 0, 255).astype(np.uint8) for t, f in enumerate(moving)]
    assert steady < 0.3 * flow.warp_error(flicker)
    assert flow.warp_error(moving, [None, (0, 0, 60, 60), None, (0, 0, 60, 60)]) < 0.3 * flow.warp_error(
        flicker, [None, (0, 0, 60, 60), None, (0, 0, 60, 60)])


def test_motion_warp_error_counts_flicker_and_not_the_scenes_motion():
    import cv2

    from pipeline import synth

    rng = np.random.default_rng(2)
    photo = cv2.GaussianBlur(rng.integers(0, 255, (160, 200, 3)).astype(np.uint8), (0, 0), 1.2)
    frames, motion = synth.clean_clip(photo, 6, (96, 80), seed=1, shift=0.3, angle=10)
    boxes = [(16, 16, 80, 64)] * 6
    steady = metrics.motion_warp_error(frames, motion, boxes)
    flicker = [np.clip(f + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8) for f in frames]
    # the truth moved exactly reads only Lanczos' error, far under noise of 3 levels (2 x 3^2 x 3 / 255^2 x 1000)
    assert steady < 0.05 * metrics.motion_warp_error(flicker, motion, boxes)
    # a frame held still, or the motion taken the wrong way, is change the measure must see
    assert steady < 0.3 * metrics.motion_warp_error([frames[0]] * 6, motion, boxes)
    assert steady < 0.3 * metrics.motion_warp_error(frames[::-1], motion, boxes)
    # the input-flow E_warp of the same steady truth counts the flow's own error too
    assert metrics.FlowField(frames).warp_error(frames, boxes) > 2 * steady
