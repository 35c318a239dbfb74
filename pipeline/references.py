"""Per-track reference crops: the best frames of each track, plus the user's photos of that person.

Each detection is scored from what is cheap and telling: sharpness (variance of the Laplacian of the
aligned crop), face size, frontal pose (aligned landmarks against the template) and detector score.
The top-k frames, at least `references.min_gap` frames apart, become the track's references. User photos
(`references.photos`: name -> paths, `--ref NAME=a.jpg,b.jpg`) are aligned the same way and given to
the tracks whose identity embedding matches theirs.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from . import align
from .errors import ReelfaceError
from .restorers.base import TrackRefs, crops_to_tensor

SHARPNESS_SIZE = 128  # aligned crops are measured at this size: sharpness relative to the face
CANDIDATES_PER_REF = 4  # detections kept (by the cheap scores) per wanted reference before decoding
POSE_SCALE = 25.0  # px at 512: largest landmark offset from the template that halves the pose score
FULL_SIZE = 128.0  # px inter-ocular x 2.5 ~ face width at which size stops adding to the score


@dataclass
class TrackReferences:
    """What was chosen for one track (for the report)."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    photos: list[str] = field(default_factory=list)  # user photos matched to this track
    person: str | None = None


def pose_score(aligned_landmarks: np.ndarray) -> np.ndarray:
    """1 for a frontal face, toward 0 as the aligned landmarks leave the template (yaw, pitch)."""
    # the largest offset: a turned head moves mostly the nose, which a mean over 5 points would dilute
    offset = np.linalg.norm(aligned_landmarks - align.FFHQ_TEMPLATE_512[None], axis=-1).max(-1)
    return 1.0 / (1.0 + (offset / POSE_SCALE) ** 2)


def size_score(transforms: np.ndarray) -> np.ndarray:
    """Face width in frame pixels (from the crop zoom), saturating at FULL_SIZE."""
    face_px = 512.0 / np.maximum(align.transform_scale(transforms), 1e-6) * 0.5
    return np.clip(face_px / FULL_SIZE, 0.0, 1.0)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey aligned crop at SHARPNESS_SIZE."""
    grey = cv2.cvtColor(cv2.resize(crop, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())


def cheap_scores(track, transforms: np.ndarray) -> np.ndarray:
    """Score of each entry before decoding: size x pose x detector score (0 where not detected)."""
    aligned = align.transform_points(transforms, np.asarray(track.landmarks, np.float32))
    score = size_score(transforms) * pose_score(aligned) * np.asarray(track.scores, np.float32)
    return np.where(np.asarray(track.detected, bool), score, 0.0)


def spread_top(frames: list[int], scores: np.ndarray, k: int, min_gap: int) -> list[int]:
    """Indices of up to k best scores whose frames are at least min_gap apart (greedy, best first)."""
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] <= 0 or len(chosen) == k:
            break
        if all(abs(frames[i] - frames[j]) >= min_gap for j in chosen):
            chosen.append(int(i))
    return chosen


class ReferenceStore:
    """Every track's references, stored once in the work dir as uint8 (one file per track), fetched per
    track where a restorer needs them: a render task or a restore actor reads the few tracks of its
    chunk, never the whole table, so neither the driver nor a task grows with the number of people.

    Picklable as its folder only: Ray sends it to tasks and actors by name (the work dir is shared,
    as it is for the segments). A small cache keeps the tracks of the current chunk converted.
    """

    CACHED_TRACKS = 4  # a chunk's few tracks; each holds up to K float crops of 3 MB

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._cache: collections.OrderedDict[int, TrackRefs] = collections.OrderedDict()

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def _file(self, track_id: int) -> Path:
        return self.folder / f"track-{track_id:06d}.npz"

    def put(self, track_id: int, crops: list[np.ndarray], embedding: np.ndarray | None) -> None:
        from .manifest import durable_replace

        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".track-{track_id:06d}.tmp.npz"
        arrays = {"crops": np.asarray(crops, np.uint8).reshape(-1, align.CROP_SIZE, align.CROP_SIZE, 3)}
        if embedding is not None:
            arrays["embedding"] = np.asarray(embedding, np.float32)
        np.savez(tmp, **arrays)
        durable_replace(tmp, self._file(track_id))

    def crops(self, track_id: int) -> np.ndarray | None:
        """The stored uint8 crops (K, 512, 512, 3) of a track, None when it has no entry."""
        file = self._file(track_id)
        if not file.exists():
            return None
        with np.load(file) as data:
            return data["crops"]

    def get(self, track_id: int, default=None) -> TrackRefs | None:
        """What a restorer gets for this track (float crops in [0, 1], identity embedding)."""
        if track_id in self._cache:
            self._cache.move_to_end(track_id)
            return self._cache[track_id]
        file = self._file(track_id)
        if not file.exists():
            return default
        with np.load(file) as data:
            embedding = torch.from_numpy(data["embedding"]) if "embedding" in data else None
            refs = TrackRefs(crops=crops_to_tensor(data["crops"]), embedding=embedding)
        self._cache[track_id] = refs
        if len(self._cache) > self.CACHED_TRACKS:
            self._cache.popitem(last=False)
        return refs

    def key_of(self, refs: TrackRefs) -> int | None:
        """The track id of a TrackRefs this store handed out (and still caches), else None."""
        return next((key for key, value in self._cache.items() if value is refs), None)

    def clear(self) -> None:
        """Remove every stored track (before the references are chosen again)."""
        for file in self.folder.glob("*.npz"):
            file.unlink()
        self._cache.clear()

    def track_ids(self) -> list[int]:
        return sorted(int(f.stem.split("-")[1]) for f in self.folder.glob("track-*.npz"))

    def __bool__(self) -> bool:
        return self.folder.is_dir() and any(self.folder.glob("track-*.npz"))


def select_references(path, trackset, cfg, store: ReferenceStore, keep: int | None = None
                      ) -> dict[int, TrackReferences]:
    """Choose every track's references, put the first `keep` of them (photos first; None: all) in
    `store`, and return what was chosen and why. Decodes only the frames of candidate detections, and
    holds a track's candidate crops only until the decode has passed its last candidate.
    """
    from .process import track_transforms
    from .video import decode

    top_k, min_gap = cfg.references.top_k, cfg.references.min_gap
    keep = top_k + max((len(v) for v in cfg.references.photos.values()), default=0) if keep is None else keep
    people = _load_people(cfg) if cfg.references.photos else {}
    wanted: dict[int, list[tuple[object, int, np.ndarray, float]]] = {}  # frame -> (track, i, M, cheap)
    last_wanted: dict[int, list[object]] = {}  # frame -> tracks whose last candidate it is
    for track in trackset.tracks:
        transforms = track_transforms(track)
        cheap = cheap_scores(track, transforms)
        picks = spread_top(track.frames, cheap, top_k * CANDIDATES_PER_REF, max(1, min_gap // 2))
        for i in picks:
            wanted.setdefault(track.frames[i], []).append((track, i, transforms[i], float(cheap[i])))
        last_wanted.setdefault(max((track.frames[i] for i in picks), default=-1), []).append(track)
    chosen: dict[int, TrackReferences] = {}
    candidates: dict[int, list[tuple[int, np.ndarray, float]]] = {}  # track -> (frame, crop, score)

    def finish(track) -> None:
        found = candidates.pop(track.track_id, [])
        info = chosen[track.track_id] = TrackReferences(track.track_id)
        photos = _match_person(track, people, info, cfg)
        picks = spread_top([f for f, _, _ in found], np.array([s for _, _, s in found]), top_k, min_gap) \
            if found else []
        info.frames = [found[p][0] for p in picks]
        info.scores = [round(found[p][2], 3) for p in picks]
        store.put(track.track_id, [*photos, *(found[p][1] for p in picks)][:keep], track.embedding)

    for track in last_wanted.pop(-1, []):  # no candidates: nothing to decode for them
        finish(track)
    if wanted:
        for frame in decode(path, min(wanted), max(wanted) + 1):
            for track, i, transform, cheap in wanted.get(frame.index, []):
                crop = align.warp_faces(frame.rgb, transform[None])[0]
                candidates.setdefault(track.track_id, []).append((frame.index, crop, cheap * sharpness(crop)))
            for track in last_wanted.get(frame.index, []):
                finish(track)
    return chosen


def photo_face(path: str | Path, detector) -> tuple[np.ndarray, Any]:
    """A reference photo as RGB and its largest face; ReelfaceError if unreadable or faceless."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if img is None:
        why = "not an image" if Path(path).is_file() else "a directory" if Path(path).is_dir() else "no such file"
        raise ReelfaceError(f"reference photo {path} cannot be read ({why}): give JPEG/PNG files "
                            "(--ref NAME=a.jpg,b.jpg)")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    faces = detector.detect([rgb])[0]
    if not faces:
        raise ReelfaceError(f"no face found in reference photo {path}: use a photo where the face is clearly visible")
    return rgb, max(faces, key=lambda f: f.size)


def load_photo_refs(paths: list[str], detector, embedder) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Aligned crops of the largest face in each photo and their mean identity embedding."""
    crops, embeddings = [], []
    for p in paths:
        rgb, face = photo_face(p, detector)
        crops.append(align.warp_faces(rgb, align.estimate_transforms(face.landmarks[None]))[0])
        embeddings.append(embedder.embed(rgb, [face])[0])
    if not embeddings:
        return crops, None
    mean = np.mean(embeddings, 0)
    return crops, mean / max(np.linalg.norm(mean), 1e-9)


def _load_people(cfg) -> dict[str, tuple[list[np.ndarray], np.ndarray | None]]:
    """Each person's aligned photo crops and mean embedding (references.photos)."""
    from tracking.detectors import get_detector
    from tracking.embedders import get_embedder

    detector, embedder = get_detector(cfg), get_embedder(cfg)
    return {name: load_photo_refs(paths, detector, embedder) for name, paths in cfg.references.photos.items()}


def _match_person(track, people: dict, info: TrackReferences, cfg) -> list[np.ndarray]:
    """The photo crops of the person whose embedding matches the track best above the threshold (they
    come first: usually the sharpest references there are); records the match in `info`."""
    from tracking.embedders import same_person_threshold

    if track.embedding is None:
        return []
    sims = {name: float(np.dot(emb, track.embedding)) for name, (_, emb) in people.items() if emb is not None}
    if not sims:
        return []
    name = max(sims, key=sims.get)
    if sims[name] < same_person_threshold(cfg):
        return []
    info.photos = list(map(str, cfg.references.photos[name]))
    info.person = name
    return people[name][0]
