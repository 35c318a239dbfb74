"""Tracking on generated clips with ground truth: identities through a crossing, an occlusion and a cut;
landmark jitter and lag."""

import cv2
import numpy as np
import pytest

from pipeline import synth
from pipeline.config import load_config
from tracking.build import build_tracks
from tracking.detect import detect_chunk
from tracking.detectors import get_detector

from tracking_clips import face_patch, idf1, match_faces, multi_face_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory, data_dir):
    return multi_face_clip(tmp_path_factory.mktemp("faces"), data_dir / "refs", get_detector(load_config()))


@pytest.fixture(scope="module")
def tracked(clip):
    """Detected in two chunks, split right at the cut (encoders put keyframes there, so chunk borders
    often fall on cuts): the cut must be found from the border thumbnails."""
    cfg = load_config()
    chunks = [detect_chunk(clip.path, clip.cut, clip.n_frames, cfg), detect_chunk(clip.path, 0, clip.cut, cfg)]
    return build_tracks(chunks, clip.n_frames, cfg)


def gt_tracks(clip, trackset, gid, frames):
    """Track ids and person ids of the predictions matched to ground-truth face `gid` in `frames`."""
    matches = match_faces(clip, trackset)
    hits = [matches[f][0][gid][0] for f in frames if gid in matches[f][0]]
    return {t.track_id for t in hits}, {t.person_id for t in hits}, len(hits)


def test_cut_is_found_and_no_track_crosses_it(clip, tracked):
    assert tracked.cuts == [clip.cut]
    for track in tracked.tracks:
        assert track.frames[0] >= clip.cut or track.frames[-1] < clip.cut
        assert track.shot == (1 if track.frames[0] >= clip.cut else 0)


def test_idf1(clip, tracked):
    assert idf1(clip, tracked) >= 0.95


def test_no_identity_switch_at_the_crossing(clip, tracked):
    lo, hi = clip.crossing
    for gid in (0, 1):  # the crossing pair: one track each from before to after the crossing
        track_ids, _, n = gt_tracks(clip, tracked, gid, range(max(0, lo - 5), min(clip.cut, hi + 5)))
        assert len(track_ids) == 1 and n > 10, f"face {gid} switched tracks at the crossing: {track_ids}"
    a, _, _ = gt_tracks(clip, tracked, 0, range(clip.cut))
    b, _, _ = gt_tracks(clip, tracked, 1, range(clip.cut))
    assert not a & b


def test_same_person_after_the_occlusion_and_across_the_cut(clip, tracked):
    lo, hi = clip.occluded
    _, before, _ = gt_tracks(clip, tracked, 2, range(0, lo))
    _, after, _ = gt_tracks(clip, tracked, 2, range(hi, clip.cut))
    assert len(before) == 1 and before == after
    for gid in clip.boxes:
        _, persons, _ = gt_tracks(clip, tracked, gid, range(clip.n_frames))
        assert len(persons) == 1, f"face {gid} got person ids {persons}"
    assert len(tracked.person_ids) == len(clip.boxes)


def test_detection_stride_fills_every_frame(clip):
    cfg = load_config("fast")
    assert cfg.detect.stride == 3
    trackset = build_tracks([detect_chunk(clip.path, 0, clip.n_frames, cfg)], clip.n_frames, cfg)
    assert trackset.cuts == [clip.cut]
    assert idf1(clip, trackset) >= 0.95
    for track in trackset.tracks:
        assert track.detected.sum() <= len(track) / 2  # most frames came from the motion model
        assert np.isfinite(track.landmarks).all()


@pytest.fixture(scope="module")
def obama(data_dir):
    photo = cv2.cvtColor(cv2.imread(str(data_dir / "refs" / "obama" / "obama1.jpg")), cv2.COLOR_BGR2RGB)
    return face_patch(photo, get_detector(load_config()), margin=1.6)


def test_smoothing_cuts_jitter_on_a_static_face(obama, tmp_path):
    """The same degraded picture every frame (fresh noise each frame): any landmark motion is jitter."""
    patch, _ = obama
    frame = cv2.resize(patch, (192, 192), interpolation=cv2.INTER_AREA)
    path = synth.write_clip(tmp_path / "static.mp4", synth.degrade([frame] * 40, seed=1))
    cfg = load_config()
    trackset = build_tracks([detect_chunk(path, 0, 40, cfg)], 40, cfg)
    (track,) = trackset.tracks
    assert len(track) == 40 and track.detected.all()
    raw = np.diff(track.raw_landmarks, axis=0).std()
    smooth = np.diff(track.landmarks, axis=0).std()
    assert raw > 0.05  # the detector does jitter here
    assert smooth <= 0.3 * raw, (smooth, raw)


def test_smoothing_follows_a_moving_face_without_lag(obama, tmp_path):
    """A photo moved along a smooth path: smoothed landmarks are closer to the truth than raw ones."""
    patch, landmarks = obama
    frames, transforms = synth.clean_clip(patch, 40, (192, 192), seed=3, shift=0.15)
    path = synth.write_clip(tmp_path / "moving.mp4", frames)
    cfg = load_config()
    trackset = build_tracks([detect_chunk(path, 0, 40, cfg)], 40, cfg)
    track = max(trackset.tracks, key=len)
    truth = np.stack([(m[:, :2] @ landmarks.T).T + m[:, 2] for m in transforms])[track.frames]
    # the detector's landmark convention differs from the photo's by a constant offset per point
    bias = (track.raw_landmarks - truth).mean(0)
    raw_err = np.abs(track.raw_landmarks - truth - bias).mean()
    smooth_err = np.abs(track.landmarks - truth - bias).mean()
    assert smooth_err <= raw_err
    lag = (track.landmarks - track.raw_landmarks).mean(axis=(0, 1))
    assert np.abs(lag).max() < 0.2  # no systematic trailing behind the motion
