"""The fusion restorer: acceptance on a generated ground-truth clip, any crop size, determinism, outlier
rejection, and a deconvolution that follows the footage's own blur and noise."""

import cv2
import numpy as np
import pytest
import torch

from pipeline.restorers.fusion import FusionRestorer, WienerFilter, estimate_psf_sigma, roughness

INNER_GAIN = 2.6  # dB; measured 2.63 (2.95 before the deconvolution followed the crop scale: this clip lost, larger faces gained)
FACE_GAIN = 2.6  # dB; measured 2.76


@pytest.fixture(scope="module")
def generated(data_dir):
    """Acceptance clip: a sharp photo on a smooth path, 512x512, degraded (blur, 2x down/up, noise, JPEG)."""
    from pipeline.config import load_config
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip, restore_clip

    clip = make_ground_truth_clip(data_dir / "refs" / "obama" / "obama1.jpg", n_frames=16, size=512, seed=3)
    cfg = load_config("default")
    restored = restore_clip(clip.degraded, ground_truth_trackset(clip.landmarks), FusionRestorer(cfg.restore), cfg)
    return clip, restored


def test_fusion_beats_the_degraded_input_on_ground_truth(generated):
    """Acceptance on the evaluate protocol's clip (measured: see benchmarks/README.md, quality)."""
    from pipeline.evaluate import measure_against_truth

    clip, restored = generated
    report = measure_against_truth({"input": clip.degraded, "restored": restored}, clip.clean)
    before, after = report["input"], report["restored"]
    assert report["faces_in_truth"] == len(clip.clean)
    assert after["inner_face_psnr"] - before["inner_face_psnr"] >= INNER_GAIN, report
    assert after["face_psnr"] - before["face_psnr"] >= FACE_GAIN, report
    assert after["psnr"] > before["psnr"] and after["face_ssim"] > before["face_ssim"]
    assert after["face_e_warp"] < 0.5 * before["face_e_warp"]
    assert after["identity_cosine"] >= before["identity_cosine"] - 1e-3
    assert after["akd_px"] <= before["akd_px"] + 0.5


def _photo_luma(data_dir, size=256):
    img = cv2.imread(str(data_dir / "refs" / "obama" / "obama1.jpg"), cv2.IMREAD_GRAYSCALE)
    h, w = img.shape
    side = min(h, w) // 2
    face = img[h // 5: h // 5 + side, (w - side) // 2: (w + side) // 2]
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def test_blur_estimate_follows_the_footage(data_dir):
    """A sharp image reads as nothing to undo; the same image blurred reads a little less than its blur."""
    sharp = _photo_luma(data_dir)
    assert estimate_psf_sigma(sharp, 1.0) == 0.0
    for sigma in (1.5, 2.5):
        blurred = cv2.GaussianBlur(sharp, (0, 0), sigma)
        assert 0.7 * sigma <= estimate_psf_sigma(blurred, 1.0) <= sigma, sigma  # on the safe side: too wide rings


def test_blur_estimate_follows_the_crops_enlargement(data_dir):
    """The same footage cropped at another enlargement needs that much wider a PSF in crop pixels, and
    a sharp source enlarged is still sharp (its edges are as wide as the enlargement made them)."""
    sharp = _photo_luma(data_dir, 192)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    for scale in (1.0, 1.5, 2.0):
        size = int(192 * scale)
        enlarged = cv2.resize(blurred, (size, size), interpolation=cv2.INTER_CUBIC)
        assert 0.7 * 1.5 * scale <= estimate_psf_sigma(enlarged, scale) <= 1.5 * scale, scale
        assert estimate_psf_sigma(cv2.resize(sharp, (size, size), interpolation=cv2.INTER_CUBIC), scale) == 0.0


def test_blur_estimate_reads_a_large_faces_middle_and_a_small_faces_whole_crop(data_dir):
    """Fine sharp texture at the crop's border (hair, clothes) is left out of the reading when the crop
    spans many source pixels, and read with the rest when it spans few."""
    blurred = cv2.GaussianBlur(_photo_luma(data_dir, 512), (0, 0), 2.0)
    textured = blurred.copy()
    stripes = 128 + 100 * np.sign(np.sin(np.arange(512) * 2.0)).astype(np.float32)  # 1-3 px stripes
    border = np.ones((512, 512), bool)
    border[88:-88, 88:-88] = False  # the texture stays outside the middle 60% and its Sobel reach
    textured[border] = np.broadcast_to(stripes, (512, 512))[border]
    many, few = 1.0, 2.0  # 512 and 256 source px across the crop
    assert estimate_psf_sigma(blurred, many) > 0
    assert estimate_psf_sigma(textured, many) == estimate_psf_sigma(blurred, many)
    assert estimate_psf_sigma(textured, few) < 0.8 * estimate_psf_sigma(blurred, few)


def test_wiener_restores_blur_and_never_amplifies_noise_alone(data_dir):
    sharp = _photo_luma(data_dir)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1.0, sharp.shape).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0) + noise
    restored = WienerFilter(blurred, noise, 2.0)(blurred)
    inner = (slice(16, -16), slice(16, -16))
    assert np.abs(restored - sharp)[inner].mean() < 0.8 * np.abs(blurred - sharp)[inner].mean()  # measured 0.75
    # no blur to undo: the filter only removes noise (gain <= 1 at every frequency)
    assert float(WienerFilter(blurred, noise, 0.0).filter.max()) <= 1.0



def _noisy_run(n=5, size=512, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.25 * np.sin(12 * xx + 3 * yy)[None] * np.cos(9 * yy)[None]
    clean = np.repeat(base[:, None], 3, 1).repeat(n, 0).astype(np.float32)
    return torch.from_numpy(np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)), clean


@pytest.mark.parametrize("size", [96, 512])
def test_fusion_is_deterministic_and_takes_any_crop_size(size):
    crops, _ = _noisy_run(3, size)
    restorer = FusionRestorer()
    a, b = restorer.restore(crops, None), restorer.restore(crops.clone(), None)
    assert a.shape == crops.shape and a.dtype == crops.dtype
    assert torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_a_brief_change_is_the_crops_own_content_not_an_outlier():
    """A blink: 3 crops of an 11-crop window differ from the other 8. The middle one keeps it (the
    window's majority is not what a crop must look like)."""
    crops, _ = _noisy_run(11, 128)
    blinked = crops.clone()
    blinked[4:7, :, 40:80, 40:80] -= 0.3
    out = FusionRestorer().restore(blinked, None)[5]
    region = (slice(None), slice(50, 70), slice(50, 70))
    assert float((out[region] - blinked[5][region]).mean().abs()) < 0.03  # against the majority: ~0.2


def test_roughness_reads_frame_to_frame_jitter_and_not_steady_or_smooth_change():
    rng = np.random.default_rng(5)
    n, size = 15, 64
    timeline = rng.permutation(n)  # the stack's order is not time's: roughness sorts it
    steady = np.zeros((n, size, size), np.float32)
    steady[:, 16:48, 16:48] += np.linspace(0, 40, n, dtype=np.float32)[:, None, None]  # a ramp: smooth in time
    steady[6:9, 40:60, 40:60] -= 60  # a blink: three frames
    assert float(np.abs(roughness(steady[np.argsort(timeline)], timeline)).max()) < 0.1
    sigma = 4.0
    jitter = rng.normal(0, sigma, (n, size, size)).astype(np.float32)
    read = roughness((steady + jitter)[np.argsort(timeline)], timeline)[8:-8, 8:-8]
    # independent noise in every frame reads its sigma, less the little of it coarser than ROUGH_SCALE
    assert 0.8 * sigma < float(np.median(read)) < 1.0 * sigma
    assert not roughness(jitter[:2], np.arange(2)).any()  # two crops have no second difference
    # a change over an area, however fast (a mouth in speech), has no fine detail inside it: not jitter there
    area = np.zeros((n, size, size), np.float32)
    area[:, 12:52, 12:52] = rng.uniform(-40, 40, n)[:, None, None]
    assert float(np.abs(roughness(area, np.arange(n))[22:42, 22:42]).max()) < 0.5


def test_fine_jitter_that_differs_in_every_crop_is_averaged_not_kept():
    """Aliasing on detail: every crop differs from all the others at fine scale in one region, far more than
    the noise elsewhere. Each crop's own jitter there is averaged away at least as much as a plain average
    of the window would (judged on the noise alone, the neighbours were rejected and the crop kept 0.31 of
    its own)."""
    rng = np.random.default_rng(1)
    n, size = 15, 128
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = (0.5 + 0.2 * np.sin(6 * xx + 2 * yy) * np.cos(5 * yy)).astype(np.float32)
    frames = []
    for _ in range(n):
        frame = base + rng.normal(0, 0.004, base.shape).astype(np.float32)
        fine = cv2.GaussianBlur(rng.normal(0, 0.25, base.shape).astype(np.float32), (0, 0), 1.0)
        frame[40:88, 40:88] += fine[40:88, 40:88]
        frames.append(np.repeat(frame[None], 3, 0))
    crops = torch.from_numpy(np.clip(np.stack(frames), 0, 1))
    out = FusionRestorer().restore(crops, None)[7]
    region = (slice(None), slice(48, 80), slice(48, 80))
    truth = torch.from_numpy(base)[48:80, 48:80]
    kept = float((out[region] - truth).std()) / float((crops[7][region] - truth).std())
    assert kept < 1 / np.sqrt(n)


def test_outlier_neighbour_is_rejected():
    crops, clean = _noisy_run(5, 256)
    occluded = crops.clone()
    occluded[1, :, 75:175, 75:175] = 0.0  # a neighbour with a dark occluder over the middle
    restorer = FusionRestorer()
    center = 2
    without = restorer.restore(crops, None)[center]
    with_outlier = restorer.restore(occluded, None)[center]
    region = (slice(None), slice(85, 165), slice(85, 165))
    # plain averaging of 5 frames would pull the region down by ~0.1 (0.5 / 5)
    assert float((without[region] - with_outlier[region]).abs().mean()) < 0.01
    # and fusion still denoises there
    err = float((with_outlier[region] - torch.from_numpy(clean[center][region])).abs().mean())
    assert err < float((crops[center][region] - torch.from_numpy(clean[center][region])).abs().mean())


def test_a_run_restored_in_parts_on_threads_is_the_run_restored_whole():
    """Parts of a run go to OpenCV's threads, each with the windows it needs: the same numbers as one
    part (a part that took its windows from its own ends would differ next to the cut)."""
    from pipeline import crop_flow
    from pipeline.restorers import fusion

    rng = np.random.default_rng(1)
    texture = cv2.resize(rng.uniform(0, 255, (12, 12, 3)).astype(np.float32), (64, 64))
    run = np.stack([np.roll(texture, k, axis=1) + rng.normal(0, 6, texture.shape) for k in range(2 * crop_flow.PART_CROPS)])
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        whole = fusion.restore_run(run.astype(np.float32), 1.5)
        cv2.setNumThreads(2)
        parts = fusion.restore_run(run.astype(np.float32), 1.5)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(whole, parts)


def test_a_resampled_source_is_deconvolved_without_overshoot_with_a_steeper_transfer():
    """Footage downscaled 3x and enlarged again keeps its low frequencies and loses the rest at once.
    Deconvolved as a Gaussian blur as wide (the same 1/e frequency), its middle frequencies come out 13% and
    20% stronger than the truth's; with the transfer exponent 3 (`restore.blur_exponent`) within 5%."""
    from pipeline import metrics

    rng = np.random.default_rng(5)

    def texture(n):  # amplitude falling as 1/f^1.2, as a natural image's
        f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
        f[0, 0] = 1
        img = np.fft.ifft2((rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / f ** 1.2).real
        return (128 + 40 * img / img.std()).astype(np.float32)

    truths = [texture(240) for _ in range(3)]
    resampled = [cv2.resize(cv2.resize(t, (80, 80), interpolation=cv2.INTER_AREA), (240, 240),
                            interpolation=cv2.INTER_CUBIC) for t in truths]
    rgb = lambda images: [np.repeat(image[..., None], 3, 2) for image in images]  # noqa: E731
    boxes = [(0, 0, 240, 240)] * 3
    # the Gaussian as wide as the resampling: the same 1/e frequency
    transfer = metrics.frequency_response(rgb(resampled), rgb(truths), boxes)
    centres = (np.arange(len(transfer)) + 0.5) * metrics.RING_WIDTH
    k = next(i for i, g in enumerate(transfer) if g < np.exp(-1))
    edge = np.interp(np.exp(-1), transfer[k - 1:k + 1][::-1], centres[k - 1:k + 1][::-1])
    sigma = 1 / (np.sqrt(2) * np.pi * edge)
    noise = [rng.normal(0, 0.3, r.shape).astype(np.float32) for r in resampled]
    gains = {exponent: metrics.frequency_response(
        rgb([WienerFilter(r, n, sigma, exponent)(r) for r, n in zip(resampled, noise)]), rgb(truths), boxes)
        for exponent in (2.0, 3.0)}
    middle = slice(1, 3)  # 0.05-0.15 cycles a px, under the 1/e frequency (0.17)
    assert max(gains[2.0][middle]) > 1.15  # measured 1.13, 1.20
    assert max(gains[3.0][middle]) < 1.07  # measured 1.02, 1.05
    # and no less of what is above it
    assert gains[3.0][3] > 0.95 * gains[2.0][3]


def test_the_configured_blur_exponent_reaches_the_wiener_filter(monkeypatch):
    from pipeline.config import load_config
    from pipeline.restorers import fusion
    from pipeline.restorers.registry import get_restorer

    used = []
    real = fusion.WienerFilter.__init__

    def recording(self, fused, noise, sigma, exponent=2.0):
        used.append(exponent)
        real(self, fused, noise, sigma, exponent)

    monkeypatch.setattr(fusion.WienerFilter, "__init__", recording)
    crops, _ = _noisy_run(3, 96)
    for exponent in ("2", "3.5"):
        used.clear()
        get_restorer(load_config("default", [f"restore.blur_exponent={exponent}"]).restore).restore(crops, None)
        assert used and set(used) == {float(exponent)}
