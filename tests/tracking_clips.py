"""Ground-truth clips for the tracking tests (built from ../shared/data/refs with pipeline.synth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline import synth

PEOPLE = ["obama", "biden", "kit_harington", "rose_leslie"]


def face_patch(photo: np.ndarray, detector, margin: float = 1.3) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around the photo's largest face (margin x its box) and its landmarks in the crop."""
    face = max(detector.detect([photo])[0], key=lambda f: f.size)
    cx, cy = (face.box[:2] + face.box[2:]) / 2
    half = margin * max(face.box[2] - face.box[0], face.box[3] - face.box[1]) / 2
    x1, y1 = int(round(cx - half)), int(round(cy - half))
    side = int(round(2 * half))
    padded = cv2.copyMakeBorder(photo, side, side, side, side, cv2.BORDER_REFLECT101)
    crop = padded[y1 + side:y1 + 2 * side, x1 + side:x1 + 2 * side]
    return crop, face.landmarks - (x1, y1)


def smooth_background(size: tuple[int, int], seed: int) -> np.ndarray:
    """Low-frequency colour field: scenery with no faces in it, different per seed (so cuts show)."""
    rng = np.random.default_rng(seed)
    width, height = size
    small = rng.integers(30, 220, (4, 5, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@dataclass
class MultiFaceClip:
    path: Path
    n_frames: int
    cut: int
    boxes: dict[int, np.ndarray]  # ground-truth face image boxes (n_frames, 4), NaN when absent
    visible: dict[int, np.ndarray]
    crossing: tuple[int, int]  # frames where faces 0 and 1 overlap
    occluded: tuple[int, int]  # frames [start, stop) where face 2 is hidden


def scenario_paths(n_frames: int, cut: int, size: tuple[int, int], face_px: float) -> dict[int, np.ndarray]:
    """Paths for synth.compose_faces (centre x, centre y, width). Shot 1: faces 0 and 1 cross (1 in
    front), face 2 walks along the top behind a pillar. Shot 2: all three again, side by side, drifting."""
    width, height = size
    t = np.linspace(0, 1, cut)[:, None]
    t2 = np.linspace(0, 1, n_frames - cut)[:, None]
    starts = {0: ((0.2, 0.58), (0.8, 0.58)), 1: ((0.8, 0.68), (0.2, 0.68)), 2: ((0.15, 0.18), (0.85, 0.18))}
    after = {0: (0.5, 0.55), 1: (0.2, 0.6), 2: (0.8, 0.5)}
    paths = {}
    for fid, (a, b) in starts.items():
        path = np.empty((n_frames, 3), np.float32)
        path[:cut, :2] = (np.array(a) + t * (np.array(b) - np.array(a))) * size
        path[cut:, :2] = (np.array(after[fid]) + t2 * np.array([0.04, -0.03])) * size
        path[:, 2] = face_px
        paths[fid] = path
    return paths


def multi_face_clip(folder: Path, refs: Path, detector, n_frames: int = 80, cut: int = 45,
                    size: tuple[int, int] = (384, 288)) -> MultiFaceClip:
    """Three people from refs/: a crossing, an occlusion behind a pillar, a hard cut (all come back)."""
    faces = {}
    for fid in range(3):
        photo = cv2.cvtColor(cv2.imread(str(sorted((refs / PEOPLE[fid]).glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
        faces[fid], _ = face_patch(photo, detector)
    face_px = 0.34 * size[1]
    paths = scenario_paths(n_frames, cut, size, face_px)
    pillar = synth.Occluder((size[0] * 0.5 - face_px * 0.3, 0, size[0] * 0.5 + face_px * 0.3, size[1] * 0.36), 0, cut)
    frames, boxes, visible = synth.compose_faces(
        [smooth_background(size, 0), smooth_background(size, 1)], [cut], faces, paths, [pillar])
    path = synth.write_clip(folder / "faces.mp4", frames)
    overlap = [i for i in range(cut) if _iou(boxes[0][i], boxes[1][i]) > 0]
    hidden = [i for i in range(cut) if visible[2][i] < 0.5]
    return MultiFaceClip(path, n_frames, cut, boxes, visible, (min(overlap), max(overlap) + 1),
                         (min(hidden), max(hidden) + 1))


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_faces(clip: MultiFaceClip, trackset) -> list[tuple[dict, int]]:
    """Per frame: ({ground-truth id: (track, i)} for the predicted faces whose box centre lies in that
    face's box, the number of predicted faces that lie in no ground-truth face)."""
    out = []
    for f in range(clip.n_frames):
        found, stray = {}, 0
        for track, i in trackset.faces_at(f):
            cx, cy = (track.boxes[i, :2] + track.boxes[i, 2:]) / 2
            inside = [g for g, gt in clip.boxes.items() if not np.isnan(gt[f, 0]) and clip.visible[g][f] > 0
                      and gt[f, 0] <= cx <= gt[f, 2] and gt[f, 1] <= cy <= gt[f, 3]]
            if inside:
                found[max(inside, key=lambda g: clip.visible[g][f])] = (track, i)
            else:
                stray += 1
        out.append((found, stray))
    return out


def idf1(clip: MultiFaceClip, trackset, min_visible: float = 0.5) -> float:
    """IDF1 with person ids as the predicted identities (a ground-truth id persists across the cut).

    Faces less than `min_visible` shown are "don't care" (MOTChallenge's rule for occluded targets):
    finding them is not required, and a track that follows one there is not a false positive.
    """
    from scipy.optimize import linear_sum_assignment

    gt_ids, persons = sorted(clip.boxes), trackset.person_ids
    counts = np.zeros((len(gt_ids), len(persons)))
    n_gt = n_pred = 0
    for f, (found, stray) in enumerate(match_faces(clip, trackset)):
        n_pred += stray
        for g in gt_ids:
            if clip.visible[g][f] < min_visible:
                continue
            n_gt += 1
            if g in found:
                n_pred += 1
                counts[gt_ids.index(g), persons.index(found[g][0].person_id)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return float(2 * counts[rows, cols].sum() / max(n_gt + n_pred, 1))
