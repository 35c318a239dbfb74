"""Reference selection: scores, spread in time, decoding only candidates, user photos matched by identity."""

import json

import numpy as np
import pytest

from pipeline import align, references, report
from pipeline.config import load_config


def test_spread_top_keeps_the_best_frames_apart():
    frames = list(range(20))
    scores = np.array([0.1] * 20)
    scores[[5, 6, 7, 15]] = [0.9, 1.0, 0.8, 0.5]
    assert references.spread_top(frames, scores, 3, 5) == [6, 15, 0]
    assert references.spread_top(frames, np.zeros(20), 3, 5) == []


def test_pose_score_prefers_frontal_faces():
    frontal = align.FFHQ_TEMPLATE_512[None]
    turned = frontal.copy()
    turned[:, 2, 0] += 60  # nose far to one side: a turned head
    assert references.pose_score(frontal)[0] == pytest.approx(1.0)
    assert references.pose_score(turned)[0] < 0.6


def test_sharpness_prefers_sharp_crops():
    import cv2

    rng = np.random.default_rng(0)
    sharp = cv2.resize(rng.integers(0, 255, (128, 128, 3)).astype(np.uint8), (512, 512))
    assert references.sharpness(sharp) > 3 * references.sharpness(cv2.GaussianBlur(sharp, (0, 0), 4))


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, data_dir):
    from pipeline.evaluate import ground_truth_trackset, make_ground_truth_clip
    from pipeline.synth import write_clip

    clip = make_ground_truth_clip(data_dir / "refs" / "obama" / "obama1.jpg", n_frames=12, size=256, seed=1)
    frames = [f.copy() for f in clip.clean]
    import cv2

    for k in (1, 2, 3):  # a few blurred frames: they must not be chosen
        frames[k] = cv2.GaussianBlur(frames[k], (0, 0), 3)
    path = write_clip(tmp_path_factory.mktemp("refs") / "clip.mp4", frames)
    return path, ground_truth_trackset(clip.landmarks)


def test_select_references_from_a_video(clip_file, tmp_path):
    path, trackset = clip_file
    cfg = load_config("default", ["references.top_k=3", "references.min_gap=3"])
    store = references.ReferenceStore(tmp_path / "refs")
    chosen = references.select_references(path, trackset, cfg, store)
    stored = store.crops(0)
    assert stored.dtype == np.uint8 and stored.shape == (3, 512, 512, 3)  # kept as 8-bit, not float
    crops = store.get(0).crops
    assert crops.shape == (3, 3, 512, 512) and 0 <= float(crops.min()) and float(crops.max()) <= 1
    assert np.array_equal((crops * 255).round().byte().permute(0, 2, 3, 1).numpy(), stored)
    picked = sorted(chosen[0].frames)
    assert all(b - a >= 3 for a, b in zip(picked, picked[1:]))
    assert not {1, 2, 3} & set(picked)
    sheet = report.contact_sheet(store, tmp_path / "sheet.png")
    assert sheet.is_file() and sheet.stat().st_size > 1000


def test_only_what_the_restorer_uses_is_stored(clip_file, tmp_path):
    path, trackset = clip_file
    cfg = load_config("default", ["references.top_k=3", "references.min_gap=3"])
    best = references.select_references(path, trackset, cfg, references.ReferenceStore(tmp_path / "all"))[0].frames
    two = references.ReferenceStore(tmp_path / "two")
    assert references.select_references(path, trackset, cfg, two, keep=2)[0].frames == best  # the report's
    assert len(two.crops(0)) == 2 and np.array_equal(two.crops(0), references.ReferenceStore(tmp_path / "all").crops(0)[:2])
    none = references.ReferenceStore(tmp_path / "none")
    assert references.select_references(path, trackset, cfg, none, keep=0)[0].frames == best
    assert len(none.crops(0)) == 0 and none.get(0).embedding is None  # the track has no embedding here
    assert none.get(1) is None  # no such track


def test_the_store_travels_by_name(tmp_path):
    import pickle

    store = references.ReferenceStore(tmp_path)
    store.put(7, [np.full((512, 512, 3), 9, np.uint8)], np.ones(4, np.float32))
    first = store.get(7)
    assert store.key_of(first) == 7 and store.key_of(references.TrackRefs(crops=first.crops)) is None
    copy = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 500 and copy.track_ids() == [7]
    assert round(float(copy.get(7).crops.max()) * 255, 4) == 9 and copy.get(7).embedding.tolist() == [1, 1, 1, 1]


def test_user_photos_go_to_the_matching_track(clip_file, data_dir, tmp_path):
    from tracking.embedders import DlibEmbedder
    from pipeline.evaluate import _detector
    from pipeline.video import decode

    path, trackset = clip_file
    track = trackset.tracks[0]
    frame = next(iter(decode(path)))
    face = max(_detector().detect([np.array(frame.rgb)])[0], key=lambda f: f.size)
    track.embedding = DlibEmbedder().embed(np.array(frame.rgb), [face])[0]
    photos = {"obama": [str(data_dir / "refs" / "obama" / "obama2.jpg")],
              "biden": [str(data_dir / "refs" / "biden" / "biden1.jpg")]}
    cfg = load_config("default", ["references.top_k=2", "references.min_gap=3",
                                  f"references.photos={json.dumps(photos)}"])
    store = references.ReferenceStore(tmp_path / "refs")
    chosen = references.select_references(path, trackset, cfg, store)
    assert chosen[0].person == "obama" and chosen[0].photos == photos["obama"]
    assert store.crops(0).shape[0] == 3  # the photo first, then the 2 frames


def test_unreadable_photo_is_a_clear_error(tmp_path):
    from pipeline.errors import ReelfaceError

    bad = tmp_path / "not_a_photo.jpg"
    bad.write_text("nope")
    with pytest.raises(ReelfaceError, match="cannot be read"):
        references.load_photo_refs([str(bad)], detector=None, embedder=None)
