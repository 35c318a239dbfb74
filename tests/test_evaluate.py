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


def test_streamed_frames_give_the_numbers_of_held_frames(data_dir):
    """Measuring from streams (as evaluate does with decoded files, one frame of each held at a time)
    gives exactly the numbers of the same frames held in lists, and E_warp pooled a pair of frames at a
    time is the whole clip's (one FlowField over all frames)."""
    from pipeline import metrics
    from pipeline.evaluate import _detector, _face_box, _largest_face, make_ground_truth_clip, measure_against_truth

    clip = make_ground_truth_clip(data_dir / "refs" / "biden" / "biden2.jpg", n_frames=4, size=192, seed=3)
    held = measure_against_truth({"input": clip.degraded, "clean": clip.clean}, clip.clean)
    streamed = measure_against_truth({"input": iter(clip.degraded), "clean": iter(clip.clean)}, iter(clip.clean),
                                     frame_count=4)
    assert streamed == held
    assert held["input"]["e_warp"] > held["clean"]["e_warp"]  # the degraded clip flickers more
    assert held["clean"]["e_warp"] == round(metrics.FlowField(clip.degraded).warp_error(clip.clean), 4)
    # the face figure too: pooled over the face boxes found on the ground truth, frame by frame
    detector = _detector()
    boxes = [_face_box(_largest_face(detector.detect([frame])[0]), frame.shape) for frame in clip.clean]
    assert held["clean"]["face_e_warp"] == round(metrics.FlowField(clip.degraded).warp_error(clip.clean, boxes), 4)


def test_frames_are_read_lazily_one_of_each_video_at_a_time(data_dir):
    """evaluate's streams are consumed in lockstep: when frame k of one video is read, no video has
    been read past frame k + 1 (nothing is read ahead or held), so memory does not grow with the clip."""
    from pipeline.evaluate import make_ground_truth_clip, measure_against_truth

    clip = make_ground_truth_clip(data_dir / "refs" / "biden" / "biden2.jpg", n_frames=5, size=160, seed=4)
    read = {"truth": 0, "input": 0, "restored": 0}

    def counted(name, frames):
        for frame in frames:
            read[name] += 1
            assert max(read.values()) - min(read.values()) <= 1, read
            yield frame

    report = measure_against_truth({"input": counted("input", clip.degraded), "restored": counted("restored", clip.clean)},
                                   counted("truth", clip.clean), frame_count=5)
    assert read == {"truth": 5, "input": 5, "restored": 5} and report["frames"] == 5


def test_without_ground_truth_faces_come_from_tracking(files):
    """The tracks evaluate measures along are tracking/'s (tracker, shot cuts), from the streamed file
    or from frames in memory alike; a track shorter than min_track frames is not measured."""
    from pipeline.evaluate import _frames, measure_without_truth, track_frames, track_reference

    folder, gt, degraded = files
    trackset = track_reference(degraded, 6)
    assert len(trackset.tracks) == 1 and trackset.tracks[0].frames == list(range(6))
    report = measure_without_truth({"input": _frames(degraded)}, _frames(degraded), trackset=trackset)
    assert report["tracks"] == 1 and 0.9 < report["input"]["identity_consistency"] <= 1.0 + 1e-9
    held = list(_frames(degraded))
    assert [t.frames for t in track_frames(held).tracks] == [t.frames for t in trackset.tracks]
    assert measure_without_truth({"input": held}, held) == report
    trackset.tracks[0].frames = trackset.tracks[0].frames[:4]
    assert measure_without_truth({"input": _frames(degraded)}, _frames(degraded), trackset=trackset)["tracks"] == 0
