"""`reelface evaluate` on files: with ground truth and without, plus the side-by-side video."""

import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.synth import ClipSpec, write_clip


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_dir):
    from pipeline.evaluate import make_ground_truth_clip

    folder = tmp_path_factory.mktemp("evaluate")
    clip = make_ground_truth_clip(data_dir / "refs" / "biden" / "biden2.jpg", n_frames=6, size=256, seed=2)
    lossless = ClipSpec(options={"preset": "ultrafast", "qp": "0"})
    gt = write_clip(folder / "gt.mp4", clip.clean, lossless)
    degraded = write_clip(folder / "degraded.mp4", clip.degraded, lossless)
    return folder, gt, degraded


def test_evaluate_with_ground_truth_scores_the_input_against_itself(files):
    from pipeline.evaluate import evaluate

    folder, gt, degraded = files
    report = evaluate(degraded, degraded, ground_truth=gt, out_dir=folder / "out")
    assert report["frames"] == 6 and report["faces_in_truth"] == 6
    assert all(abs(v) < 1e-9 for v in report["change"].values())
    assert report["input"]["face_psnr"] < report["input"]["psnr"] + 5  # degraded: a real, finite PSNR
    assert 0.9 < report["input"]["identity_cosine"] <= 1.0
    assert (folder / "out" / "side_by_side.mp4").is_file()
    assert json.loads((folder / "out" / "evaluation.json").read_text())["frames"] == 6


def test_evaluate_cli_without_ground_truth(files, capsys):
    folder, gt, degraded = files
    assert main(["evaluate", str(gt), "--input", str(degraded)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tracks"] == 1
    assert report["restored"]["e_warp"] < report["input"]["e_warp"]  # the clean clip flickers less
    assert report["input"]["identity_consistency"] > 0.9


def test_frame_count_mismatch_is_a_user_error(files, capsys):
    folder, gt, degraded = files
    short = write_clip(folder / "short.mp4", [np.zeros((64, 64, 3), np.uint8)] * 3)
    assert main(["evaluate", str(short), "--input", str(degraded)]) == 2
    assert "frames" in capsys.readouterr().err


def test_without_ground_truth_follows_several_faces(data_dir):
    """Two people in every frame: each gets a track of its own (this once crashed on the second face)."""
    import cv2

    from pipeline.evaluate import measure_without_truth

    photo = cv2.cvtColor(cv2.imread(str(data_dir / "images" / "two_people.jpg")), cv2.COLOR_BGR2RGB)
    photo = photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2]
    frames = [photo.copy() for _ in range(3)]
    report = measure_without_truth({"input": frames}, frames, min_track=3)
    assert report["tracks"] == 2
    assert all(c > 0.99 for c in report["input"]["identity_consistency_per_track"])
