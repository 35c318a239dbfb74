"""The fusion restorer: acceptance on a generated ground-truth clip, determinism, outlier rejection,
detail transfer from references."""

import numpy as np
import pytest
import torch

from pipeline.restorers.base import TrackRefs
from pipeline.restorers.fusion import FusionRestorer


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
    """Acceptance: >= 2.5 dB mean PSNR gain on the inner face (eyes, nose, mouth), >= 2.0 dB on the
    detector's whole face box (measured 2.3), lower E_warp, identity cosine not lowered."""
    from pipeline.evaluate import measure_against_truth

    clip, restored = generated
    report = measure_against_truth({"input": clip.degraded, "restored": restored}, clip.clean)
    before, after = report["input"], report["restored"]
    assert report["faces_in_truth"] == len(clip.clean)
    assert after["inner_face_psnr"] - before["inner_face_psnr"] >= 2.5, report
    assert after["face_psnr"] - before["face_psnr"] >= 2.0, report
    assert after["psnr"] > before["psnr"] and after["face_ssim"] > before["face_ssim"]
    assert after["e_warp"] < before["e_warp"] and after["face_e_warp"] < before["face_e_warp"]
    assert after["identity_cosine"] >= before["identity_cosine"] - 1e-3
    assert after["akd_px"] <= before["akd_px"] + 0.5


def _noisy_run(n=5, size=512, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.25 * np.sin(12 * xx + 3 * yy)[None] * np.cos(9 * yy)[None]
    clean = np.repeat(base[:, None], 3, 1).repeat(n, 0).astype(np.float32)
    return torch.from_numpy(np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)), clean


def test_fusion_is_deterministic_and_shaped():
    crops, _ = _noisy_run(3)
    restorer = FusionRestorer()
    a, b = restorer.restore(crops, None), restorer.restore(crops.clone(), None)
    assert a.shape == crops.shape and a.dtype == crops.dtype
    assert torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_outlier_neighbour_is_rejected():
    crops, clean = _noisy_run(5)
    occluded = crops.clone()
    occluded[1, :, 150:350, 150:350] = 0.0  # a neighbour with a dark occluder over the middle
    restorer = FusionRestorer()
    center = 2
    without = restorer.restore(crops, None)[center]
    with_outlier = restorer.restore(occluded, None)[center]
    region = (slice(None), slice(170, 330), slice(170, 330))
    # plain averaging of 5 frames would pull the region down by ~0.1 (0.5 / 5)
    assert float((without[region] - with_outlier[region]).abs().mean()) < 0.01
    # and fusion still denoises there
    err = float((with_outlier[region] - torch.from_numpy(clean[center][region])).abs().mean())
    assert err < float((crops[center][region] - torch.from_numpy(clean[center][region])).abs().mean())


def test_sharper_reference_gives_detail_only_where_it_agrees():
    import cv2

    rng = np.random.default_rng(2)
    grey = cv2.resize(rng.uniform(0, 1, (128, 128)).astype(np.float32), (512, 512), interpolation=cv2.INTER_CUBIC)
    sharp = np.repeat(grey[..., None], 3, -1)  # fine detail lives in luma (colour is fused at half size)
    sharp = np.clip(sharp, 0, 1)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    crops = torch.from_numpy(np.stack([blurred] * 3)).permute(0, 3, 1, 2).contiguous()
    refs = TrackRefs(crops=torch.from_numpy(sharp[None]).permute(0, 3, 1, 2).contiguous())
    restorer = FusionRestorer()
    plain = restorer.restore(crops, None)[1].permute(1, 2, 0).numpy()
    helped = restorer.restore(crops, [refs] * 3)[1].permute(1, 2, 0).numpy()
    assert np.abs(helped - sharp).mean() < 0.8 * np.abs(plain - sharp).mean()
    # a reference of something else (another texture, much brighter: disagreeing at low frequencies)
    # gives nothing
    brighter = np.clip(0.5 + 0.5 * np.roll(sharp, 97, axis=(0, 1)), 0, 1)
    other = TrackRefs(crops=torch.from_numpy(brighter[None]).permute(0, 3, 1, 2).contiguous())
    ignored = restorer.restore(crops, [other] * 3)[1].permute(1, 2, 0).numpy()
    assert np.abs(ignored - plain).mean() < 0.01
