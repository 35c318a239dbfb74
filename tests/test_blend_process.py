"""process.restore_frames: chunked runs give the same frames as one run (with the context it asks for)."""

import functools

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
    assert paths["json"].is_file()
    # the page's chart: per panel (temporal error, identity) an input and a restored bar for the track,
    # the restored temporal error's bar the shorter one
    import base64
    import re
    from xml.dom import minidom

    encoded = re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', paths["html"].read_text()).group(1)
    bars = minidom.parseString(base64.b64decode(encoded)).getElementsByTagName("rect")
    heights = [float(b.getAttribute("height")) for b in bars if b.getAttribute("width") != "10"]  # not the legend
    assert len(heights) == 4
    assert heights[1] < heights[0]


def _part(track, track_id: int, lo: int, hi: int):
    """Entries lo..hi-1 of a track, as a track of its own."""
    from dataclasses import replace

    return replace(track, track_id=track_id, frames=track.frames[lo:hi], boxes=track.boxes[lo:hi],
                   landmarks=track.landmarks[lo:hi], raw_landmarks=track.raw_landmarks[lo:hi],
                   scores=track.scores[lo:hi], detected=track.detected[lo:hi])


def test_frames_are_pasted_as_their_last_face_is_restored(clip):
    """A frame is pasted once every face in it is restored and blended, not when the whole batch of
    frames is done: with three people one after the other, the restorer works on the next person while
    the previous one is blended, so by the time it is called for the third, the first one's frames are
    final (a chunk holds the changes of at most two runs' frames, not of all its frames)."""
    from tracking.faces import TrackSet

    frames, trackset = clip
    [track] = trackset.tracks
    part = functools.partial(_part, track)
    three = TrackSet(tracks=[part(1, 0, 3), part(2, 3, 6), part(3, 6, 10)], cuts=[], frame_count=10)
    held = [ArrayFrame(i, f) for i, f in enumerate(frames)]

    class Recording(WindowMean):
        pasted_before_call: list[int] = []

        def restore(self, crops, refs):
            self.pasted_before_call.append(sum(not np.array_equal(f.rgb, frames[f.index]) for f in held))
            return super().restore(crops, refs)

    restorer = Recording()
    restore_frames(held, three, None, restorer, load_config("default", ["restore.batch_size=8"]))
    assert len(restorer.pasted_before_call) == 3  # one call per person
    assert restorer.pasted_before_call[2] >= 3  # the first person's 3 frames are done
    alone = [ArrayFrame(i, f) for i, f in enumerate(frames)]
    restore_frames(alone, TrackSet(tracks=[part(1, 0, 3)], cuts=[], frame_count=10), None, WindowMean(),
                   load_config("default", ["restore.batch_size=8"]))
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(held[:3], alone[:3]))


def test_frames_are_handed_over_in_order_as_soon_as_they_are_final(clip):
    """on_final gets every frame once, in order, already pasted, and as soon as it and the frames before it
    are done: with the people listed last-first, runs still start from the first frame, so the first
    person's frames go to the encoder before the restorer is called for the third person."""
    from tracking.faces import TrackSet

    frames, trackset = clip
    [track] = trackset.tracks
    part = functools.partial(_part, track)
    last_first = TrackSet(tracks=[part(3, 6, 10), part(2, 3, 6), part(1, 0, 3)], cuts=[], frame_count=10)
    cfg = load_config("default", ["restore.batch_size=8"])

    class Counting(WindowMean):
        calls = 0

        def restore(self, crops, refs):
            self.calls += 1
            return super().restore(crops, refs)

    restorer = Counting()
    handed: list[tuple[int, int, np.ndarray]] = []
    held = [ArrayFrame(i, f) for i, f in enumerate(frames)]
    restore_frames(held, last_first, None, restorer, cfg,
                   on_final=lambda frame: handed.append((frame.index, restorer.calls, frame.rgb.copy())))
    assert [index for index, _, _ in handed] == list(range(10))
    assert all(np.array_equal(rgb, held[index].rgb) for index, _, rgb in handed)  # final when handed over
    assert restorer.calls == 3 and all(calls <= 2 for index, calls, _ in handed if index < 3)
    unstreamed = [ArrayFrame(i, f) for i, f in enumerate(frames)]
    restore_frames(unstreamed, last_first, None, Counting(), cfg)
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(held, unstreamed))
    assert not np.array_equal(held[0].rgb, frames[0])


class CountingEmbedder:
    """Stands in for dlib: an 'embedding' of the crop's brightness; remembers how many faces it described."""

    def __init__(self):
        self.faces = 0

    def align(self, img, faces):
        return [img for _ in faces]

    def describe(self, chips):
        self.faces += len(chips)
        return np.array([[chip.mean() / 255, 1.0] for chip in chips], np.float32).reshape(-1, 2)


def test_identity_is_sampled_from_the_measured_frames_only(clip, monkeypatch):
    import copy

    from pipeline import process

    frames, trackset = clip
    trackset = copy.deepcopy(trackset)
    trackset.tracks[0].embedding = np.array([0.5, 1.0], np.float32)
    cfg = load_config("default")

    def identity(lo, hi, measured):
        stats, embedder = {}, CountingEmbedder()
        restore_frames([ArrayFrame(i, frames[i]) for i in range(lo, hi)], trackset, None, WindowMean(), cfg,
                       stats=stats, embedder=embedder, measured=measured)
        return stats[0].identity_before, stats[0].identity_after, embedder.faces

    with monkeypatch.context() as m:
        m.setattr(process, "IDENTITY_SAMPLES_PER_RUN", 10)
        every_frame, _, _ = identity(0, 10, None)  # a crop is the same whatever the chunk's context
    # a chunk of frames 0..4 with 3 frames of context: its samples spread over its own frames only
    before, after, embedded = identity(0, 8, range(0, 5))
    assert before == [every_frame[k] for k in (0, 2, 4)] and len(after) == 3 and embedded == 6
    # a run all in the context frames (a track that ends at the chunk border) is not measured at all
    before, after, embedded = identity(0, 5, range(5, 10))
    assert before == after == [] and embedded == 0


def test_temporal_errors_are_the_mean_squared_change_inside_the_face_mask():
    """Against float64 written out per channel and pixel: the change's squares summed over R, G and B,
    averaged over the pixels where the face mask exceeds 1/2, on a 0..1 scale, x1000. Every channel changes,
    and the pixels outside the mask change far more, so a dropped mask, channel or scale shows."""
    from pipeline.align import crop_mask
    from pipeline.process import temporal_errors

    size = 96
    rng = np.random.default_rng(11)
    face = crop_mask(size) > 0.5
    crops = (rng.uniform(20, 235, (size, size, 3)) + rng.normal(0, 6, (4, size, size, 3))).astype(np.float32)
    crops[:, ~face] = rng.uniform(0, 255, (4, int((~face).sum()), 3))  # outside the face: a change 10x larger
    expected = []
    for before, after in zip(crops[:-1], crops[1:]):
        squares = sum((after[..., c].astype(np.float64) - before[..., c].astype(np.float64)) ** 2 for c in range(3))
        expected.append(1000.0 * float(squares[face].mean()) / 255.0 ** 2)
    assert np.allclose(temporal_errors(crops), expected, rtol=1e-5, atol=0)
    assert np.allclose(temporal_errors(list(crops)), expected, rtol=1e-5, atol=0)
    assert temporal_errors(crops[:1]) == []


class Recording(WindowMean):
    """WindowMean that records the length of every call."""

    def __init__(self):
        self.calls = []

    def restore(self, crops, refs):
        self.calls.append(len(crops))
        return super().restore(crops, refs)


@pytest.mark.parametrize("n", [8, 9, 20, 23])
def test_a_run_is_cut_into_the_fewest_calls_with_context_and_the_same_crops(n, monkeypatch):
    from pipeline import process

    monkeypatch.setattr(process, "MIN_RUN", 4)
    monkeypatch.setattr(process, "CALL_PIXELS", 0)
    r, keep = WindowMean.temporal_radius, 4
    crops = np.random.default_rng(n).uniform(0, 255, (n, 8, 8, 3)).astype(np.float32)
    restorer = Recording()
    cut = process.restore_run(crops, None, restorer, 1, 1.0)
    whole = WindowMean().restore(torch.from_numpy(crops / 255.0).permute(0, 3, 1, 2), None)
    assert np.allclose(np.stack(cut), whole.permute(0, 2, 3, 1).numpy() * 255.0, atol=0.01)
    # a run of keep + 2r crops is one call; longer ones the fewest calls of about keep crops and their context
    assert len(restorer.calls) == max(1, -(-(n - 2 * r) // keep))
    assert max(restorer.calls) <= keep + 3 * r
