"""Detectors and embedders on real photos from ../shared/data."""

import cv2
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from tracking.detectors import get_detector
from tracking.embedders import DlibEmbedder, get_embedder, recognisable


def read(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detector():
    return get_detector(load_config())


@pytest.mark.parametrize("name, count", [("obama_and_biden.jpg", 3), ("two_people.jpg", 2), ("kit_with_rose.jpg", 2),
                                         ("old_photo_00.jpg", 4)])
def test_retinaface_finds_every_face(detector, data_dir, name, count):
    faces = detector.detect([read(data_dir / "images" / name)])[0]
    assert len(faces) == count
    for f in faces:
        lm = f.landmarks
        assert f.box[0] <= lm[:, 0].min() and lm[:, 0].max() <= f.box[2]  # landmarks inside the box
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left-in-image eye / mouth corner first
        assert lm[2, 1] > lm[:2, 1].mean() and lm[3:, 1].mean() > lm[2, 1]  # eyes, nose, mouth top to bottom


def test_landmarks_are_sub_pixel_and_match_the_package(detector, data_dir):
    """Our decoding gives the package's own result, without its rounding to ints."""
    from retinaface import detect_faces

    image = read(data_dir / "images" / "obama_and_biden.jpg")
    ours = sorted(detector.detect([image])[0], key=lambda f: f.box[0])
    theirs = sorted(detect_faces(image, score_threshold=0.6), key=lambda f: f.x)
    assert len(ours) == len(theirs)
    fractional = np.concatenate([f.landmarks.ravel() % 1 for f in ours])
    assert np.abs(fractional - 0.5).max() < 0.5 and fractional.std() > 0.1
    for o, t in zip(ours, theirs):
        assert np.abs(o.landmarks - np.array([[p.x, p.y] for p in t.landmarks])).max() <= 1.0


def test_same_face_at_two_resolutions(detector, data_dir):
    """obama-240p is obama-1080p downscaled: its small face (upscaled second pass) lands on the same spot."""
    big = detector.detect([read(data_dir / "images" / "obama-1080p.jpg")])[0]
    small_img = read(data_dir / "images" / "obama-240p.jpg")
    small = detector.detect([small_img])[0]
    assert len(big) == len(small) == 1
    scale = 1080 / small_img.shape[0]
    err = np.linalg.norm(small[0].landmarks * scale - big[0].landmarks, axis=1) / big[0].size
    assert err.max() < 0.06


def test_batched_detection_equals_single(detector, data_dir):
    image = read(data_dir / "images" / "two_people.jpg")
    one = detector.detect([image])[0]
    batch = detector.detect([image, image[:, ::-1].copy()])
    assert len(batch) == 2 and len(batch[0]) == len(one)
    assert np.allclose(batch[0][0].landmarks, one[0].landmarks, atol=1e-3)


def test_dlib_embeddings_tell_people_apart(detector, data_dir):
    embedder = DlibEmbedder()
    vectors, names = [], []
    for person in ("obama", "biden", "kit_harington", "rose_leslie"):
        for path in sorted((data_dir / "refs" / person).glob("*.jpg")):
            image = read(path)
            face = max(detector.detect([image])[0], key=lambda f: f.size)
            assert recognisable(image, face, [face])
            vectors.append(embedder.embed(image, [face])[0])
            names.append(person)
    v = np.array(vectors)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    same = np.array(names)[:, None] == np.array(names)[None, :]
    off_diag = ~np.eye(len(names), dtype=bool)
    assert sims[same & off_diag].min() > DlibEmbedder.same_person > sims[~same].max()


def test_missing_insightface_models_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr("tracking.detectors.INSIGHTFACE_HOME", tmp_path)
    with pytest.raises(ReelfaceError, match="buffalo_l.*retinaface"):
        get_detector(load_config("default", ["detect.backend=scrfd"]))
    with pytest.raises(ReelfaceError, match="buffalo_l"):
        get_embedder(load_config("default", ["track.embedder=arcface"]))
    with pytest.raises(ReelfaceError, match="retinaface | scrfd"):
        get_detector(load_config("default", ["detect.backend=yolo"]))


def test_a_big_frame_detected_downscaled_gives_its_faces_in_frame_pixels(detector, data_dir):
    """What video detection does with a 1080p frame (detect.scan_size): the faces of a 360 px copy,
    mapped back to the frame, land where full-resolution detection puts them."""
    from tracking.detectors import resized, scan_scale

    frame = read(data_dir / "images" / "obama-1080p.jpg")
    scale = scan_scale(frame.shape, load_config().detect.scan_size)
    assert scale < 0.5
    full = detector.detect([frame])[0]
    downscaled = detector.detect_scaled(frame, resized(frame, scale), scale)
    assert len(full) == len(downscaled) == 1
    err = np.linalg.norm(downscaled[0].landmarks - full[0].landmarks, axis=1) / full[0].size
    assert err.max() < 0.06
    assert np.abs(downscaled[0].box - full[0].box).max() < 0.1 * full[0].size


def test_a_tiny_face_next_to_a_small_one_is_found_by_the_second_pass(detector, data_dir):
    """A frame detected at 1/5 scale: a face 34 px there is small, so the region around it is detected
    again at twice that scale from the frame's own pixels, which finds the 16 px face beside it that
    the first pass misses."""
    from tracking.detectors import SmallFaceDetector, resized
    from tracking_clips import face_patch

    patch, _ = face_patch(read(data_dir / "images" / "obama-1080p.jpg"), detector, margin=2.0)
    frame = np.full((600, 900, 3), 90, np.uint8)
    scale = 0.2
    for size, (x, y) in ((34, (100, 100)), (16, (480, 120))):  # face sizes at the detection scale
        side = int(2 * size / scale)  # the patch is twice the face
        frame[y:y + side, x:x + side] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    image = resized(frame, scale)
    first_pass_only = SmallFaceDetector(detector.detector, detector.min_face, 0)
    assert len(first_pass_only.detect_scaled(frame, image, scale)) == 1
    faces = sorted(detector.detect_scaled(frame, image, scale), key=lambda f: f.box[0])
    assert len(faces) == 2
    tiny = faces[1]
    assert 480 < tiny.box[0] and tiny.box[2] < 480 + 2 * 16 / scale and 120 < tiny.box[1]
    assert 0.5 < tiny.size * scale / 16 < 1.5
