"""Identity embeddings per face: `embed(frame_rgb, faces) -> (N, D) float32`, rows L2-normalised.

- `dlib`: dlib's ResNet face descriptor (128-D) from the `face-recognition-models` package (offline).
- `arcface`: insightface ArcFace (`w600k_r50.onnx` of buffalo_l, 512-D) run by onnxruntime when the model
  pack is on disk; crops are aligned from our 5 landmarks to the ArcFace 112 template.

Each embedder carries `same_person`: the cosine above which two faces are the same person for that
model (its own scale: dlib descriptors of different people still have cosines around 0.8).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.errors import ReelfaceError

from .faces import Face


# A face the embedder cannot recognise gets no embedding, so it is never linked to anyone by appearance
# (a wrong merge is worse than a missed one). Measured on hamilton.mp4: out-of-focus audience faces
# (Laplacian variance 2-5 on a 64x64 grey crop) all look alike to dlib (cosines 0.96-0.98 between
# different people); sharp faces score 13-800. On generated clips, a face half hidden behind another
# drops to cosine ~0.90 with its own unoccluded views.
EMBED_MIN_FACE = 40  # px, short side of the box
EMBED_MIN_SCORE = 0.9  # detector score
EMBED_MIN_SHARPNESS = 10.0  # variance of the Laplacian of the 64x64 grey face crop


def sharpness(frame_rgb: np.ndarray, face: Face) -> float:
    h, w = frame_rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    crop = frame_rgb[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())


EMBED_MAX_COVERED = 0.1  # fraction of the box under other faces' boxes (a face half behind another)


def recognisable(frame_rgb: np.ndarray, face: Face, others: list[Face]) -> bool:
    """Big, confident, sharp and not behind another face: worth an embedding."""
    from .detectors import covered_fraction

    return (face.size >= EMBED_MIN_FACE and face.score >= EMBED_MIN_SCORE
            and sharpness(frame_rgb, face) >= EMBED_MIN_SHARPNESS
            and covered_fraction(face.box, np.array([o.box for o in others if o is not face])) <= EMBED_MAX_COVERED)


class Embedder(Protocol):
    """`embed` = `describe(align(...))`: the aligned face pictures cost a few ms, the network several
    times that (dlib's ResNet run by torch on CPU: ~18 ms a face alone, ~10 in a batch of 8), so a caller
    can look at the pictures first (`tracking.follow` skips the network where a face's picture has not
    changed) and describe several faces at once."""

    dim: int
    same_person: float

    def align(self, frame_rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]: ...

    def describe(self, chips: list[np.ndarray]) -> np.ndarray: ...

    def embed(self, frame_rgb: np.ndarray, faces: list[Face]) -> np.ndarray: ...


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)


def _face_recognition_models_dir() -> Path:
    # the package's __init__ imports pkg_resources (gone from recent setuptools): find its folder without
    # importing it
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ReelfaceError("track.embedder=dlib needs the face-recognition-models package "
                            "(pip install face-recognition-models), or use track.embedder=arcface")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class TwoStepEmbedder:
    """An embedder as `align` then `describe` (the Embedder protocol's `embed`)."""

    def embed(self, frame_rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        return self.describe(self.align(frame_rgb, faces))


class DlibEmbedder(TwoStepEmbedder):
    """dlib ResNet descriptor on 150x150 chips aligned by dlib's own 5-point shape model inside our box;
    the network is dlib's, run by torch (`dlib_resnet`)."""

    dim = 128
    # dlib descriptors all sit in one narrow cone: measured on the refs photos (after L2 normalisation),
    # two photos of the same person 0.96, different people 0.78-0.85; on hamilton.mp4, mean embeddings
    # of one performer's tracks in two shots 0.97, of different recognisable people up to 0.94.
    same_person = 0.95

    def __init__(self) -> None:
        import dlib

        from .dlib_resnet import DlibFaceNet

        models = _face_recognition_models_dir()
        self.shape_model = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        # dlib's own network holds the GIL for its ~130 ms a face; the same network in torch does not
        network = models / "dlib_face_recognition_resnet_model_v1.dat"
        try:
            self.net = DlibFaceNet(network)
        except (OSError, ValueError, IndexError) as error:
            raise ReelfaceError(f"{network} is not dlib's face descriptor network ({error}): reinstall "
                                "face-recognition-models, or use track.embedder=arcface") from None
        self._dlib = dlib

    def align(self, frame_rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        if not faces:
            return []
        dlib = self._dlib
        frame_rgb = np.ascontiguousarray(frame_rgb)
        shapes = dlib.full_object_detections()
        for f in faces:
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            shapes.append(self.shape_model(frame_rgb, dlib.rectangle(x1, y1, x2, y2)))
        return [np.asarray(chip) for chip in dlib.get_face_chips(frame_rgb, shapes, size=150, padding=0.25)]

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        return normalise(self.net(np.stack(chips)))


# ArcFace's 112x112 five-point template (insightface `arcface_dst`)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


class ArcFaceEmbedder(TwoStepEmbedder):
    dim = 512
    same_person = 0.35  # insightface's usual verification threshold for w600k_r50 cosines

    def __init__(self, device: str = "auto", pack: str = "buffalo_l"):
        import onnxruntime as ort

        from .detectors import find_insightface_model, onnx_providers, session_options

        self.session = ort.InferenceSession(str(find_insightface_model(pack, "w600k")), session_options(),
                                            providers=onnx_providers(device))
        self.input = self.session.get_inputs()[0].name

    def align(self, frame_rgb: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        crops = []
        for f in faces:
            matrix, _ = cv2.estimateAffinePartial2D(f.landmarks, ARCFACE_TEMPLATE, method=cv2.LMEDS)
            crops.append(cv2.warpAffine(frame_rgb, matrix, (112, 112), borderMode=cv2.BORDER_REPLICATE))
        return crops

    def describe(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        batch = (np.stack(chips).astype(np.float32) - 127.5) / 127.5
        return normalise(self.session.run(None, {self.input: batch.transpose(0, 3, 1, 2)})[0])


def get_embedder(cfg) -> Embedder:
    name = cfg.track.embedder
    if name == "dlib":
        return DlibEmbedder()
    if name == "arcface":
        return ArcFaceEmbedder(cfg.detect.device)
    raise ReelfaceError(f"unknown track.embedder '{name}' (dlib | arcface)")


def same_person_threshold(cfg) -> float:
    """cfg.track.reid_threshold, or the embedder's own calibrated value when that is null."""
    if cfg.track.reid_threshold is not None:
        return float(cfg.track.reid_threshold)
    return {"dlib": DlibEmbedder.same_person, "arcface": ArcFaceEmbedder.same_person}[cfg.track.embedder]
