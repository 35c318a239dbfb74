"""pipeline.synth: clean clips, the fixed degradation, multi-face composition, special clip files."""

from fractions import Fraction

import cv2
import numpy as np
import pytest

from pipeline import synth
from pipeline.video import decode, probe


@pytest.fixture(scope="module")
def photo(data_dir):
    return cv2.cvtColor(cv2.imread(str(data_dir / "images" / "obama-240p.jpg")), cv2.COLOR_BGR2RGB)


def test_clean_clip_moves_smoothly(photo):
    frames, transforms = synth.clean_clip(photo, 24, (96, 72), seed=3)
    assert len(frames) == 24 and frames[0].shape == (72, 96, 3) and frames[0].dtype == np.uint8
    assert transforms.shape == (24, 2, 3)
    centre = np.array([photo.shape[1] / 2, photo.shape[0] / 2, 1.0])
    track = transforms @ centre  # where the photo's centre lands in each frame
    steps = np.linalg.norm(np.diff(track, axis=0), axis=1)
    assert steps.max() < 2.0 and steps.sum() > 1.0  # it moves, smoothly
    again, _ = synth.clean_clip(photo, 24, (96, 72), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_degrade_is_seeded_and_degrades(photo):
    clean, _ = synth.clean_clip(photo, 3, (96, 72), seed=0)
    a, b, c = synth.degrade(clean, seed=5), synth.degrade(clean, seed=5), synth.degrade(clean, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    err = np.mean([np.abs(x.astype(float) - y).mean() for x, y in zip(a, clean)])
    assert 3 < err < 30  # noticeably worse, still the same picture
    odd = synth.degrade([clean[0][:71, :95]])[0]
    assert odd.shape == (71, 95, 3)


def test_compose_faces_ground_truth():
    rng = np.random.default_rng(0)
    size, n, cut = (160, 120), 20, 12
    faces = {i: (rng.random((32, 28, 3)) * 255).astype(np.uint8) for i in range(3)}
    backgrounds = [np.full((120, 160, 3), 90, np.uint8), np.full((120, 160, 3), 200, np.uint8)]
    paths = synth.crossing_paths(n, size, 3, cut, seed=1)
    occ = synth.Occluder((0, 0, 160, 40), start=15, stop=17)
    frames, boxes, visible = synth.compose_faces(backgrounds, [cut], faces, paths, [occ])
    assert len(frames) == n and frames[0][0, 0, 0] == 90 and frames[cut][0, 0, 0] in (200, 40)
    for fid, box in boxes.items():
        assert box.shape == (n, 4) and not np.isnan(box).any()
        x1, y1, x2, y2 = box[0].astype(int)
        if visible[fid][0] == 1:  # fully visible: the box holds exactly that face
            expected = cv2.resize(faces[fid], (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
            assert np.array_equal(frames[0][y1:y2, x1:x2], expected)
    crossing = visible[0][: cut]  # face 1 passes in front of face 0 half way through shot one
    assert crossing.min() < 0.9 and crossing[0] == 1
    assert (visible[0][15:17] <= visible[0][14] + 1e-6).all()
    # after the cut the faces jump: a tracker must start new tracks
    jump = np.abs(boxes[0][cut, :2] - boxes[0][cut - 1, :2]).max()
    step = np.abs(boxes[0][cut - 1, :2] - boxes[0][cut - 2, :2]).max()
    assert jump > step


def test_write_clip_vfr_pts_and_tags(tmp_path):
    frames = [np.full((32, 48, 3), v, np.uint8) for v in (10, 80, 160, 240)]
    pts = [0, 1001, 3003, 3504]
    path = synth.write_clip(tmp_path / "v.mkv", frames, synth.ClipSpec(
        codec="ffv1", time_base=Fraction(1, 1000), pts=pts, color=(5, 6, 5, 1),
        audio=[synth.AudioTrack(), synth.AudioTrack(550, "fra")], subtitles=[(0, 1, "x")],
        chapters=[(0, 2, "a"), (2, 4, "b")], metadata={"title": "t"}))
    info = probe(path)
    assert info.pts == pts and info.is_vfr and info.chapters == 2 and info.metadata["title"] == "t"
    assert [s["type"] for s in info.streams] == ["video", "audio", "audio", "subtitle"]
    assert [s["language"] for s in info.streams[1:3]] == ["eng", "fra"]
    assert (info.color_primaries, info.colorspace) == (5, 5)
    grey = [int(f.rgb.mean()) for f in decode(path)]
    assert all(abs(g - v) <= 2 for g, v in zip(grey, (10, 80, 160, 240)))
