"""The quality benchmark's instruments: the generator's face sizes and degradations, the multi-frame
baseline, the E_warp definition (flow from the input) and the flickery stand-in restorer."""

import cv2
import numpy as np
import pytest

from pipeline import metrics, synth


@pytest.fixture(scope="module")
def detector():
    from tracking.detectors import RetinaFaceDetector

    return RetinaFaceDetector(threshold=0.6, device="cpu")


@pytest.fixture(scope="module")
def photo(data_dir):
    return cv2.cvtColor(cv2.imread(str(data_dir / "refs" / "biden" / "biden2.jpg")), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("face_size", [48, 160])
def test_face_size_is_what_was_asked(photo, detector, face_size):
    from pipeline.evaluate import make_ground_truth_clip

    clip = make_ground_truth_clip(photo, n_frames=6, size=(320, 240), face_size=face_size, detector=detector,
                                  seed=4)
    assert clip.clean[0].shape == (240, 320, 3) and clip.boxes.shape == (6, 4)
    sides = (clip.boxes[:, 2:] - clip.boxes[:, :2]).max(1)
    assert sides[0] == pytest.approx(face_size, rel=0.01)  # the path starts at the photo's own framing
    assert np.all(np.abs(sides / face_size - 1) < 0.15)  # then zooms by at most 10% (rotation widens the box)
    # a detector finds the face where the clip says it is, at the size it says (small photos do not fill
    # the frame: their mirror images around it hold more faces)
    centre = (clip.boxes[3, :2] + clip.boxes[3, 2:]) / 2
    found = min(detector.detect([clip.clean[3]])[0], key=lambda f: np.abs((f.box[:2] + f.box[2:]) / 2 - centre).sum())
    assert np.abs(found.box - clip.boxes[3]).max() < 0.15 * face_size
    assert np.abs(found.landmarks - clip.landmarks[3]).max() < 0.1 * face_size


@pytest.fixture(scope="module")
def clean(photo, detector):
    from pipeline.evaluate import make_ground_truth_clip

    return make_ground_truth_clip(photo, n_frames=3, size=(160, 128), face_size=96, detector=detector).clean


def _fine_energy(frames):
    return float(np.mean([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in frames]))


def test_noise_degradation_adds_white_noise_of_the_stated_level(clean):
    noisy = synth.degrade(clean, seed=1, kind="noise")
    residual = np.stack(noisy).astype(float) - np.stack(clean)
    assert residual.std() == pytest.approx(synth.NOISE_SIGMA, rel=0.1)
    neighbour = np.corrcoef(residual[..., :-1, :].ravel(), residual[..., 1:, :].ravel())[0, 1]
    assert abs(neighbour) < 0.1  # independent per pixel: noise only, no blur


def test_down3_blurs_without_noise(clean):
    a, b = synth.degrade(clean, seed=1, kind="down3"), synth.degrade(clean, seed=2, kind="down3")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # nothing random in it
    assert _fine_energy(a) < 0.3 * _fine_energy(clean)
    assert np.mean([metrics.psnr(x, y) for x, y in zip(a, clean)]) < 35


def test_chain_and_h264_degrade_deterministically(clean):
    for kind in ("chain", "h264"):
        a, b = synth.degrade(clean, seed=1, kind=kind), synth.degrade(clean, seed=1, kind=kind)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert len(a) == len(clean) and a[0].shape == clean[0].shape
        assert 20 < np.mean([metrics.psnr(x, y) for x, y in zip(a, clean)]) < 35
        assert _fine_energy(a) < _fine_energy(clean)
    with pytest.raises(ValueError, match="unknown degradation"):
        synth.degrade(clean, kind="jpeg")


def test_baseline_beats_the_input(photo, detector):
    from benchmarks.quality import multi_frame_baseline
    from pipeline.evaluate import make_ground_truth_clip

    clip = make_ground_truth_clip(photo, n_frames=11, size=(192, 160), face_size=64, detector=detector, seed=2)
    baseline = multi_frame_baseline(clip.degraded)
    box = tuple(int(v) for v in clip.boxes[5])
    assert metrics.psnr(baseline[5], clip.clean[5], box) > metrics.psnr(clip.degraded[5], clip.clean[5], box) + 1.0


def _texture(shape, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, shape).astype(np.uint8), (0, 0), 1.5)


def test_e_warp_is_zero_on_a_static_video_and_counts_added_flicker():
    still = [_texture((80, 96, 3))] * 5
    rng = np.random.default_rng(1)
    noisy = [np.clip(f + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in still]
    boxes = [(20, 20, 60, 60)] * 5
    errors = metrics.warp_errors(still, {"still": still, "noisy": noisy}, boxes)
    assert errors["still"]["e_warp"] == pytest.approx(0.0, abs=1e-6)
    assert errors["still"]["face_e_warp"] == pytest.approx(0.0, abs=1e-6)
    # the frame-to-frame difference of independent noise: 2 * 3 channels * (6/255)^2 * 1000 ~ 3.3
    assert errors["noisy"]["face_e_warp"] == pytest.approx(6 * (6 / 255) ** 2 * 1000, rel=0.15)
    assert metrics.warp_errors(still, {"still": still}, [None] * 5)["still"]["face_e_warp"] is None


def test_e_warp_uses_the_first_video_s_motion():
    texture = _texture((80, 160, 3), seed=2)
    moving = [np.roll(texture, 2 * t, axis=1)[:, 20:140] for t in range(5)]  # a steady pan
    still = [moving[0]] * 5
    boxes = [(30, 10, 90, 70)] * 5
    followed = metrics.warp_errors(moving, {"moving": moving}, boxes)["moving"]["face_e_warp"]
    assert followed < 0.05
    # the same frames judged with a still input's (zero) motion: every step counts as change
    assert metrics.warp_errors(still, {"moving": moving}, boxes)["moving"]["face_e_warp"] > 3


def test_flicker_restorer_is_deterministic_and_flickers(photo, detector):
    import torch

    from pipeline.config import load_config
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip, restore_clip
    from pipeline.restorers.flicker import DETAIL_LEVEL, FlickerRestorer

    restorer = FlickerRestorer()
    crops = torch.rand(2, 3, 512, 512)
    once, again = restorer.restore(crops), restorer.restore(crops.clone())
    assert torch.equal(once, again)
    detail = (once - crops) * 255
    assert float(detail.std()) == pytest.approx(DETAIL_LEVEL, rel=0.1)
    assert float((detail[0] - detail[1]).abs().mean()) > 0.5 * DETAIL_LEVEL  # other crop, other detail

    clip = make_ground_truth_clip(photo, n_frames=6, size=(192, 160), face_size=80, detector=detector, seed=1,
                                  degradation="down3")
    cfg = load_config("default", ["blend.temporal=0"])
    restored = restore_clip(clip.degraded, ground_truth_trackset(clip.landmarks), restorer, cfg)
    boxes = [tuple(int(v) for v in b) for b in clip.boxes]
    errors = metrics.warp_errors(clip.degraded, {"input": clip.degraded, "flicker": restored}, boxes)
    assert errors["flicker"]["face_e_warp"] > 2 * errors["input"]["face_e_warp"]


def test_e_warp_of_a_steady_video_grows_with_its_sharpness(photo, detector):
    """Why the benchmark reports the ground truth's own E_warp: the truth moves without any flicker, yet
    with the input's flow it reads above zero, and above the same steady video blurred; so a restoration
    may sit above a blurrier method's E_warp without flickering more."""
    from pipeline.evaluate import make_ground_truth_clip

    clip = make_ground_truth_clip(photo, n_frames=6, size=(256, 192), face_size=96, detector=detector, seed=4)
    box = [tuple(int(v) for v in b) for b in clip.boxes]
    softened = [cv2.GaussianBlur(f, (0, 0), 1.5) for f in clip.clean]
    errors = metrics.warp_errors(clip.degraded, {"truth": clip.clean, "softened": softened}, box)
    assert errors["truth"]["face_e_warp"] > 2 * errors["softened"]["face_e_warp"] > 0
    # along the clip's exact motion (no flow) the same steady truth reads far less: the rest was the flow's
    assert metrics.motion_warp_error(clip.clean, clip.motion, box) < 0.5 * errors["truth"]["face_e_warp"]


def test_the_summary_counts_e_warp_above_the_baseline_and_above_the_truth():
    from benchmarks.quality import _summary

    def row(reelface, baseline, truth, reelface_true=0.01, baseline_true=0.02):
        method = {"face_psnr": 30.0, "identity_cosine": 0.9}
        return {"input": {**method, "face_e_warp": 1.0, "face_e_warp_true_motion": 0.5},
                "baseline": {**method, "face_e_warp": baseline, "face_e_warp_true_motion": baseline_true},
                "reelface": {**method, "face_e_warp": reelface, "face_e_warp_true_motion": reelface_true},
                "ground_truth_face_e_warp": truth}

    summary = _summary([row(0.3, 0.2, 0.5), row(0.6, 0.2, 0.5), row(0.1, 0.2, 0.5, reelface_true=0.03)], {})
    assert summary["face_e_warp_above_baseline"] == 2
    assert summary["face_e_warp_above_baseline_and_ground_truth"] == 1
    assert summary["face_e_warp_true_motion_above_baseline"] == 1
    assert summary["face_e_warp_true_motion_reelface_over_baseline"] == {"max": 1.5, "mean": 0.833}
