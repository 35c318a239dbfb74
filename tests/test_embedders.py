"""dlib's face descriptor network run by torch (tracking.dlib_resnet) against dlib's own, on real faces."""

import cv2
import numpy as np
import pytest

from pipeline.config import load_config
from tracking.detectors import get_detector
from tracking.dlib_resnet import DlibFaceNet, read_network
from tracking.embedders import DlibEmbedder, _face_recognition_models_dir, normalise

NETWORK = "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def chips(data_dir):
    """dlib's own 150x150 chips of every face in a few photos: portraits, an old group photo, crops."""
    detector, embedder = get_detector(load_config()), DlibEmbedder()
    paths = [*sorted((data_dir / "refs").glob("*/*1.jpg")), data_dir / "images" / "old_photo_00.jpg",
             data_dir / "faces" / "0143.png", data_dir / "faces" / "Solvay_conference_1927_0018.png"]
    chips = []
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        chips += embedder.align(image, detector.detect([image])[0])
    assert len(chips) >= 9
    return np.stack(chips)


@pytest.fixture(scope="module")
def dlib_descriptors(chips):
    import dlib

    net = dlib.face_recognition_model_v1(str(_face_recognition_models_dir() / NETWORK))
    return np.array(net.compute_face_descriptor(list(chips)), np.float32)


def test_torch_gives_dlibs_descriptors(chips, dlib_descriptors):
    ours = DlibFaceNet(_face_recognition_models_dir() / NETWORK)(chips)
    # Same network, same float32 weights: only the order of the float32 sums differs (dlib's own loops vs
    # torch's matrix products). Measured: at most 4.4e-7 off on values up to 0.42, cosines 1 - 1.2e-7.
    # A network wired or read wrong is off by far more: the input over 255 instead of 256 by 3e-4, one
    # affine layer left out, a padding, the skips' zero padding or an input mean wrong by 6e-3 to 0.8.
    assert np.abs(ours - dlib_descriptors).max() < 1e-5
    cosines = (normalise(ours) * normalise(dlib_descriptors)).sum(1)
    assert cosines.min() > 0.99999


def test_describe_gives_unit_rows_whatever_the_batch(chips, dlib_descriptors):
    embedder = DlibEmbedder()
    rows = embedder.describe(list(chips))
    assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-6)
    assert np.abs(rows - normalise(dlib_descriptors)).max() < 1e-5
    # the tracker describes one face or several at a time: the batch must not change a face's numbers
    assert np.abs(embedder.describe([chips[2]])[0] - rows[2]).max() < 1e-6


def test_another_dlib_network_is_refused():
    with pytest.raises(ValueError, match="loss_metric_"):
        read_network(_face_recognition_models_dir() / "mmod_human_face_detector.dat")


def test_a_damaged_network_file_is_one_clear_error(tmp_path, monkeypatch):
    """A truncated download of the package's network is refused with what to do, not a traceback."""
    from pipeline.errors import ReelfaceError
    from tracking import embedders

    models = _face_recognition_models_dir()
    (tmp_path / "shape_predictor_5_face_landmarks.dat").symlink_to(models / "shape_predictor_5_face_landmarks.dat")
    (tmp_path / NETWORK).write_bytes((models / NETWORK).read_bytes()[:100_000])
    monkeypatch.setattr(embedders, "_face_recognition_models_dir", lambda: tmp_path)
    with pytest.raises(ReelfaceError, match="reinstall face-recognition-models"):
        DlibEmbedder()
