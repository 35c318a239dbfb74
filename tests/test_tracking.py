"""Tracking pieces without video: Kalman motion, association, track life cycle, smoothing, cuts, JSON."""

import numpy as np
import pytest

from pipeline.config import load_config
from tracking.detect import prefetch
from tracking.embedders import normalise
from tracking.faces import Face, Track, TrackSet
from tracking.follow import Follower
from tracking.kalman import KalmanBoxTracker
from tracking.shots import find_cuts
from tracking.smoothing import rts_smooth
from tracking.tracker import Tracker, assign_persons, link_tracklets

CFG = load_config()


def face_at(cx, cy, size=60.0, score=0.99, embedding=None):
    box = [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]
    offsets = np.array([[-0.2, -0.1], [0.2, -0.1], [0, 0.05], [-0.15, 0.25], [0.15, 0.25]]) * size
    return Face(box, offsets + (cx, cy), score, embedding)


def identity(k, dim=16):
    vec = np.zeros(dim, np.float32)
    vec[k] = 1.0
    vec[-1] = 0.3  # all identities share a component, like real descriptors
    return normalise(vec)


def test_kalman_predicts_constant_motion_through_a_gap():
    k = KalmanBoxTracker(face_at(100, 100), 0)
    for f in range(1, 10):
        k.predict(f)
        k.update(face_at(100 + 4 * f, 100))
    k.predict(19)  # ten frames without a detection
    centre = (k.box[:2] + k.box[2:]) / 2
    assert abs(centre[0] - (100 + 4 * 19)) < 4 and abs(centre[1] - 100) < 2
    assert k.mahalanobis2(np.array([face_at(176, 100).box]))[0] < k.mahalanobis2(np.array([face_at(100, 100).box]))[0]
    assert np.allclose(k.landmarks.mean(0), face_at(176, 100).landmarks.mean(0), atol=4)


def run_tracker(frames, cfg=CFG, same_person=0.95):
    tracker = Tracker(cfg.track, same_person)
    for f, faces in enumerate(frames):
        tracker.update(f, faces)
    return tracker.finish()


def test_crossing_faces_keep_identities():
    """Two faces cross with heavy overlap; motion plus appearance keep each on its own tracklet."""
    frames = []
    for f in range(40):
        x = 60 + 5 * f
        frames.append([face_at(x, 100, embedding=identity(0) if f % 5 == 0 else None),
                       face_at(260 - 5 * f, 108, embedding=identity(1) if f % 5 == 0 else None)])
    tracklets = run_tracker(frames)
    assert len(tracklets) == 2
    for t in tracklets:
        xs = [(fc.box[0] + fc.box[2]) / 2 for fc in t.faces]
        assert np.all(np.diff(xs) > 0) or np.all(np.diff(xs) < 0), "a tracklet jumped to the other face"


def test_flicker_is_dropped_and_a_lost_face_is_reidentified():
    frames = [[face_at(100, 100, embedding=identity(0))] for _ in range(60)]
    frames[10].append(face_at(300, 300))  # one-frame false positive
    for f in range(20, 40):  # occluded for 20 frames (within max_gap): then back a bit further on
        frames[f] = []
    for f in range(40, 60):
        frames[f] = [face_at(130, 100, embedding=identity(0))]
    tracklets = run_tracker(frames)
    assert len(tracklets) == 1
    assert tracklets[0].frames == list(range(20)) + list(range(40, 60))


def test_lost_longer_than_max_gap_is_linked_offline_by_embedding():
    frames = [[face_at(100, 100, embedding=identity(0))] for _ in range(100)]
    for f in range(10, 60):  # longer than max_gap (30), and it comes back elsewhere
        frames[f] = []
    for f in range(60, 100):
        frames[f] = [face_at(300, 200, embedding=identity(0))]
    frames[70].append(face_at(40, 40, embedding=identity(1)))
    tracklets = run_tracker(frames)
    assert len(tracklets) == 2
    groups = link_tracklets(tracklets, 0.95)
    assert len(groups) == 1


def test_persons_merge_by_embedding_but_never_within_a_frame():
    e = [identity(0), identity(0), identity(1), normalise(identity(0) + 0.1 * identity(3))]
    frames = [[0, 1, 2], [10, 11], [10, 11], [1, 2]]  # track 3 shares frames with track 0
    persons = assign_persons(e, frames, 0.95)
    assert persons[0] == persons[1] and persons[2] != persons[0] and persons[3] != persons[0]
    assert assign_persons([None, identity(0)], [[0], [5]], 0.95) == [0, 1]


def embedded_frames(paths, frames, cfg=CFG, stride=1):
    """Frames on which the follower asks for each face's embedding; paths[k](f) is face k's centre."""
    follower = Follower(cfg.track, 0.95, keep=cfg.track.bridge_gap, stride=stride, search=cfg.track.max_gap)
    wanted = [[] for _ in paths]
    for f in frames:
        faces = [face_at(*path(f)) for path in paths]
        owners, unsure = follower.follow(f, faces)
        for k, (face, want) in enumerate(zip(faces, follower.wants_embedding(f, owners, unsure))):
            if want:
                face.embedding = identity(k)
                wanted[k].append(f)
        follower.record(f, faces, owners)
    return wanted


def test_a_lone_face_is_embedded_once_confirmed_then_less_and_less_often():
    (wanted,) = embedded_frames([lambda f: (100 + 2 * f, 100)], range(300))
    assert wanted[0] == CFG.track.min_hits - 1  # not while it may still be coming out from behind something
    gaps = np.diff(wanted)
    assert gaps[0] == CFG.track.embed_near_every and gaps.max() == CFG.track.embed_every
    assert np.all(np.diff(gaps) >= 0)
    assert len(wanted) < len(range(0, 300, 5)) / 4  # under a quarter of the old policy's (every 5th frame)
    # with a detection stride, the wait for confirmation counts frames, not detections
    (strided,) = embedded_frames([lambda f: (100 + 2 * f, 100)], range(0, 60, 3), stride=3)
    assert 0 < strided[0] < CFG.track.min_hits


def test_crossing_faces_are_embedded_often_faces_side_by_side_not_and_a_returning_face_again():
    (lone,) = embedded_frames([lambda f: (100, 100)], range(150))
    # 20 px between two 60 px faces, each in its own motion gate: nothing to tell apart, no extra cost
    assert embedded_frames([lambda f: (100, 100), lambda f: (180, 100)], range(150)) == [lone, lone]
    # two faces crossing: their boxes overlap in frames 61-89, where motion alone could swap them
    a, b = embedded_frames([lambda f: (100 + 2 * f, 100), lambda f: (400 - 2 * f, 104)], range(150))
    assert a == b
    during, alone = [f for f in a if 60 < f < 90], [f for f in lone if 60 < f < 90]
    assert len(during) >= 2 and np.diff(during).max() == CFG.track.embed_near_every and len(alone) == 1
    # gone for longer than the follower keeps a face: a new tracklet, confirmed and embedded again
    frames = list(range(30)) + list(range(30 + CFG.track.bridge_gap + 2, 80))
    (wanted,) = embedded_frames([lambda f: (100, 100)], frames)
    back = frames[30]
    assert back + CFG.track.min_hits - 1 in wanted
    assert not [f for f in wanted if back <= f < back + CFG.track.min_hits - 1]


def test_prefetch_hands_over_items_and_the_producers_error():
    from pipeline.errors import ReelfaceError

    def items():
        yield 1
        yield 2
        raise ReelfaceError("truncated")

    got = []
    with pytest.raises(ReelfaceError, match="truncated"):
        for item in prefetch(items(), 1):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_stops_its_producer_when_the_consumer_stops():
    import itertools
    import threading

    closed, threads = threading.Event(), set()

    def items():
        try:
            for i in itertools.count():
                threads.add(threading.current_thread().name)
                yield i
        finally:
            closed.set()

    consumer = prefetch(items(), 2)
    assert next(consumer) == 0
    consumer.close()
    assert closed.wait(5)
    assert threads == {"decode"}


def test_rts_smoothing_removes_jitter_without_lag():
    rng = np.random.default_rng(0)
    n, size = 120, 100.0
    truth = np.stack([np.full(n, 50.0), 20 + 1.5 * np.arange(n)], 1)  # static x, moving y
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    smooth = rts_smooth(noisy, np.ones(n, bool), size, 1.0)
    raw_jitter = np.diff(noisy[:, 0]).std()
    assert np.diff(smooth[:, 0]).std() <= 0.3 * raw_jitter
    assert abs((smooth[:, 1] - truth[:, 1]).mean()) < 0.3  # no lag on the moving coordinate
    assert np.abs(smooth - truth).mean() < np.abs(noisy - truth).mean()
    observed = np.ones(n, bool)
    observed[40:50] = False  # a bridged gap is filled along the motion
    filled = rts_smooth(noisy, observed, size, 1.0)
    assert np.abs(filled[40:50, 1] - truth[40:50, 1]).max() < 3
    assert np.allclose(rts_smooth(noisy, np.ones(n, bool), size, 0.0), noisy, atol=1e-4)


def test_cuts_need_a_jump_that_stands_out():
    scores = np.full(100, 3.0)
    scores[0] = np.nan
    scores[30] = 60.0  # a cut
    scores[35] = 60.0  # too close to the previous cut
    scores[60:70] = 40.0  # fast motion: high for a run of frames, not a cut
    scores[80] = 28.0
    assert find_cuts(scores, 27.0) == [30, 80]


def test_trackset_json_round_trip(tmp_path):
    n = 4
    lm = np.random.default_rng(0).uniform(0, 100, (n, 5, 2)).astype(np.float32)
    track = Track(track_id=0, person_id=3, shot=1, frames=[5, 6, 7, 8], boxes=np.tile([1, 2, 30, 40], (n, 1)).astype(np.float32),
                  landmarks=lm, raw_landmarks=lm + 0.5, scores=np.array([0.9, 0, 0.8, 0.95], np.float32),
                  detected=np.array([True, False, True, True]), embedding=identity(2))
    ts = TrackSet([track], cuts=[5], frame_count=10)
    ts.to_json(tmp_path / "t.json")
    back = TrackSet.from_json(tmp_path / "t.json")
    assert back.cuts == [5] and back.frame_count == 10 and back.person_ids == [3]
    (t, i), = back.faces_at(7)
    assert t.frames[i] == 7 and np.allclose(t.landmarks, lm, atol=1e-3) and list(t.detected) == [1, 0, 1, 1]
    assert back.faces_at(2) == [] and back.shot_of(4) == 0 and back.shot_of(5) == 1


def test_bad_tracks_file_is_a_clear_error(tmp_path):
    from pipeline.errors import ReelfaceError

    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReelfaceError, match="reelface analyze"):
        TrackSet.from_json(tmp_path / "bad.json")
