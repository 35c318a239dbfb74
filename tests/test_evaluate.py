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



def test_linking_faces_listed_in_another_order_each_frame():
    """The detector lists faces by score, so their order changes from frame to frame (this once crashed)."""
    from pipeline.evaluate import _link_tracks
    from tracking.faces import Face

    def face(x):
        return Face(box=np.array([x, 10, x + 40, 60], np.float32), landmarks=np.zeros((5, 2), np.float32), score=0.9)

    tracks = _link_tracks([[face(0), face(100)], [face(101), face(1)], [face(2), face(102)]])
    assert [[round(float(f.box[0])) for _, f in track] for track in tracks] == [[0, 1, 2], [100, 101, 102]]
