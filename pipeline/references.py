"""Per-track reference crops: the best frames of each track, plus the user's photos of that person.

Each detection is scored from what is cheap and telling: sharpness (variance of the Laplacian of the
aligned crop), face size, frontal pose (aligned landmarks against the template) and detector score.
The top-k frames, at least `references.min_gap` frames apart, become the track's references. User photos
(`references.photos`: name -> paths, `--ref NAME=a.jpg,b.jpg`) are aligned the same way and given to
the tracks whose identity embedding matches theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from . import align
from .errors import ReelfaceError
from .outputs import written
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


def select_references_detailed(path, trackset, cfg) -> tuple[dict[int, TrackRefs], dict[int, TrackReferences]]:
    """References of every track and what was chosen; decodes only the frames of candidate detections."""
    from .process import track_transforms
    from .video import decode

    top_k, min_gap = cfg.references.top_k, cfg.references.min_gap
    wanted: dict[int, list[tuple[object, int, np.ndarray, float]]] = {}  # frame -> (track, i, M, cheap)
    for track in trackset.tracks:
        transforms = track_transforms(track)
        cheap = cheap_scores(track, transforms)
        for i in spread_top(track.frames, cheap, top_k * CANDIDATES_PER_REF, max(1, min_gap // 2)):
            wanted.setdefault(track.frames[i], []).append((track, i, transforms[i], float(cheap[i])))
    candidates: dict[int, list[tuple[int, np.ndarray, float]]] = {}  # track -> (frame, crop, score)
    if wanted:
        for frame in decode(path, min(wanted), max(wanted) + 1):
            for track, i, transform, cheap in wanted.get(frame.index, []):
                crop = align.warp_faces(frame.rgb, transform[None])[0]
                candidates.setdefault(track.track_id, []).append((frame.index, crop, cheap * sharpness(crop)))
    refs: dict[int, TrackRefs] = {}
    chosen: dict[int, TrackReferences] = {}
    for track in trackset.tracks:
        found = candidates.get(track.track_id, [])
        info = TrackReferences(track.track_id)
        picks = spread_top([f for f, _, _ in found], np.array([s for _, _, s in found]), top_k, min_gap) \
            if found else []
        info.frames = [found[p][0] for p in picks]
        info.scores = [round(found[p][2], 3) for p in picks]
        crops = [found[p][1] for p in picks]
        embedding = None if track.embedding is None else torch.from_numpy(np.asarray(track.embedding, np.float32))
        refs[track.track_id] = TrackRefs(crops=crops_to_tensor(crops) if crops else torch.zeros(0, 3, 512, 512),
                                         embedding=embedding)
        chosen[track.track_id] = info
    if cfg.references.photos:
        _add_photos(trackset, refs, chosen, cfg)
    return refs, chosen


def select_references(path, trackset, cfg) -> dict[int, TrackRefs]:
    """dict[track_id, TrackRefs]: what the restorers get (see select_references_detailed)."""
    return select_references_detailed(path, trackset, cfg)[0]


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


def _add_photos(trackset, refs: dict[int, TrackRefs], chosen: dict[int, TrackReferences], cfg) -> None:
    """Give each person's photos to the tracks whose embedding matches (best person above the threshold)."""
    from tracking.detectors import get_detector
    from tracking.embedders import get_embedder, same_person_threshold

    detector, embedder = get_detector(cfg), get_embedder(cfg)
    threshold = same_person_threshold(cfg)
    people = {name: load_photo_refs(paths, detector, embedder) for name, paths in cfg.references.photos.items()}
    for track in trackset.tracks:
        if track.embedding is None:
            continue
        sims = {name: float(np.dot(emb, track.embedding)) for name, (_, emb) in people.items() if emb is not None}
        if not sims:
            continue
        name = max(sims, key=sims.get)
        if sims[name] < threshold:
            continue
        photo_crops, _ = people[name]
        current = refs[track.track_id]
        # photos first: usually the sharpest references there are
        refs[track.track_id] = TrackRefs(crops=torch.cat([crops_to_tensor(photo_crops), current.crops]),
                                         embedding=current.embedding)
        chosen[track.track_id].photos = list(map(str, cfg.references.photos[name]))
        chosen[track.track_id].person = name


def contact_sheet(refs: dict[int, TrackRefs], path: str | Path, thumb: int = 128) -> Path | None:
    """A PNG with one row of reference thumbnails per track (track id written at the left)."""
    rows = []
    width = max((len(r.crops) for r in refs.values()), default=0)
    if width == 0:
        return None
    for track_id, r in sorted(refs.items()):
        row = np.full((thumb, thumb * (width + 1), 3), 24, np.uint8)
        cv2.putText(row, f"track {track_id}", (6, thumb // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        for k, crop in enumerate(r.crops):
            img = (crop.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            row[:, thumb * (k + 1):thumb * (k + 2)] = cv2.resize(img, (thumb, thumb), interpolation=cv2.INTER_AREA)
        rows.append(row)
    path = Path(path)
    with written(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR)):
            raise ReelfaceError(f"writing {path} failed; check the disk space")
    return path
