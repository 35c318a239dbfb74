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
    context = context_frames_needed(restorer)
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
