"""process.restore_frames: chunked runs give the same frames as one run (with the context it asks for)."""

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.process import ArrayFrame, context_frames_needed, restore_frames
from pipeline.stabilise import RADIUS as STABILISE_RADIUS


class WindowMean:
    """A cheap temporal restorer: each crop becomes the mean of its window (truncated at batch ends)."""

    name = "window-mean"
    temporal_radius = 2

    def restore(self, crops, refs):
        r = self.temporal_radius
        return torch.stack([crops[max(0, i - r): i + r + 1].mean(0) for i in range(len(crops))])


@pytest.fixture(scope="module")
def clip(data_dir):
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip

    made = make_ground_truth_clip(data_dir / "refs" / "rose_leslie" / "rose2.jpg", n_frames=10, size=192, seed=4)
    return made.degraded, ground_truth_trackset(made.landmarks)


def test_chunks_with_context_match_one_pass(clip):
    frames, trackset = clip
    cfg = load_config("default", ["restore.batch_size=4"])
    restorer = WindowMean()
    whole = [ArrayFrame(i, f) for i, f in enumerate(frames)]
    restore_frames(whole, trackset, None, restorer, cfg)
    context = context_frames_needed(restorer, cfg.blend.temporal)
    assert context == restorer.temporal_radius + STABILISE_RADIUS  # the restorer's window, then the stabiliser's
    chunked = {}
    for start, stop in ((0, 5), (5, 10)):
        lo, hi = max(0, start - context), min(len(frames), stop + context)
        part = [ArrayFrame(i, frames[i]) for i in range(lo, hi)]
        restore_frames(part, trackset, None, restorer, cfg)
        chunked.update({f.index: f.rgb for f in part if start <= f.index < stop})
    for f in whole:
        assert np.array_equal(f.rgb, chunked[f.index]), f"frame {f.index} differs between chunkings"
    assert any(not np.array_equal(f.rgb, frames[f.index]) for f in whole)  # it did restore something


def test_strength_zero_changes_nothing(clip):
    frames, trackset = clip
    cfg = load_config("default", ["blend.strength=0"])
    held = [ArrayFrame(i, f) for i, f in enumerate(frames[:4])]
    restore_frames(held, trackset, None, WindowMean(), cfg)
    assert all(np.array_equal(f.rgb, frames[f.index]) for f in held)


def test_report_stats_are_collected(clip, tmp_path):
    from pipeline.report import write_report

    frames, trackset = clip
    cfg = load_config("default")
    stats = {}
    held = [ArrayFrame(i, f) for i, f in enumerate(frames[:6])]
    restore_frames(held, trackset, None, WindowMean(), cfg, stats=stats)
    summary = stats[0].summary()
    assert summary["frames_touched"] == 6
    assert summary["temporal_error_after"] < summary["temporal_error_before"]  # window mean is steadier
    paths = write_report(tmp_path / "out.mp4", {"input": "clip"}, stats)
    assert paths["json"].is_file() and "<img" in paths["html"].read_text()


def test_frames_are_pasted_as_their_last_face_is_restored(clip):
    """A frame is pasted once every face in it is restored, not when the whole batch of frames is done:
    with two people one after the other, the first one's frames are final before the second is
    restored (so a chunk holds the changes of the frames still waiting, not of all its frames)."""
    from dataclasses import replace

    from tracking.faces import TrackSet

    frames, trackset = clip
    [track] = trackset.tracks

    def part(track_id, lo, hi):
        return replace(track, track_id=track_id, frames=track.frames[lo:hi], boxes=track.boxes[lo:hi],
                       landmarks=track.landmarks[lo:hi], raw_landmarks=track.raw_landmarks[lo:hi],
                       scores=track.scores[lo:hi], detected=track.detected[lo:hi])

    two = TrackSet(tracks=[part(1, 0, 5), part(2, 5, 10)], cuts=[], frame_count=10)
    held = [ArrayFrame(i, f) for i, f in enumerate(frames)]

    class Recording(WindowMean):
        pasted_before_call: list[int] = []

        def restore(self, crops, refs):
            self.pasted_before_call.append(sum(not np.array_equal(f.rgb, frames[f.index]) for f in held))
            return super().restore(crops, refs)

    restorer = Recording()
    restore_frames(held, two, None, restorer, load_config("default", ["restore.batch_size=8"]))
    assert restorer.pasted_before_call == [0, 5]  # one call per person; the first person's 5 frames done
    alone = [ArrayFrame(i, f) for i, f in enumerate(frames)]
    restore_frames(alone, TrackSet(tracks=[part(1, 0, 5)], cuts=[], frame_count=10), None, WindowMean(),
                   load_config("default", ["restore.batch_size=8"]))
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(held[:5], alone[:5]))
