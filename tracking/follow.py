"""Faces followed from one detected frame to the next while a chunk is detected, to know which faces
need an embedding: a face new to the chunk, or one whose last embedding is old.

This is a motion-only pass of the tracker's own association (`tracker.associate`, Kalman boxes); the
tracks themselves are still built from the detections on the driver (`tracking.build`).
"""

from __future__ import annotations

import numpy as np

from .detectors import box_iou
from .faces import Face
from .kalman import KalmanBoxTracker
from .tracker import Tracklet, associate, hits_to_confirm

NEAR_GROWTH = 0.5  # a face is near another when their boxes, grown by this much of their size, touch


def near_others(faces: list[Face]) -> np.ndarray:
    """(N,) bool: the face has another face within half its size (a crossing may be coming)."""
    if len(faces) < 2:
        return np.zeros(len(faces), bool)
    boxes = np.array([f.box for f in faces], np.float64)
    grow = (boxes[:, 2:] - boxes[:, :2]) * NEAR_GROWTH / 2
    grown = np.concatenate([boxes[:, :2] - grow, boxes[:, 2:] + grow], 1)
    iou = box_iou(grown, grown)
    np.fill_diagonal(iou, 0)
    return iou.max(1) > 0


class Follower:
    """Known faces of the current shot; tracklets not seen for `keep` frames are forgotten."""

    def __init__(self, track_cfg, same_person: float, keep: int, stride: int):
        self.cfg, self.same_person, self.keep = track_cfg, same_person, keep
        self.min_hits = hits_to_confirm(track_cfg, stride)
        self.tracklets: list[Tracklet] = []
        self.embedded: dict[int, tuple[int, int]] = {}  # tracklet id -> frames of its first and last embedding
        self.next_id = 0

    def clear(self) -> None:
        """A shot cut: nothing seen before it is expected after it."""
        self.tracklets = []

    def follow(self, frame_index: int, faces: list[Face]) -> list[Tracklet]:
        """The tracklet of each face (a new one for a face nobody expected); call `record` after."""
        self.tracklets = [t for t in self.tracklets if frame_index - t.last_frame <= self.keep]
        for t in self.tracklets:
            t.kalman.predict(frame_index)
        matches, unmatched = associate(self.tracklets, faces, self.cfg.iou_weight, self.cfg.embedding_weight,
                                       self.cfg.max_cost, self.same_person)
        owners: list[Tracklet | None] = [None] * len(faces)
        for ti, fi in matches:
            owners[fi] = self.tracklets[ti]
            owners[fi].kalman.update(faces[fi])
        for fi in unmatched:
            owners[fi] = Tracklet(self.next_id, KalmanBoxTracker(faces[fi], frame_index))
            self.next_id += 1
            self.tracklets.append(owners[fi])
        return owners

    def wants_embedding(self, frame_index: int, owners: list[Tracklet], faces: list[Face]) -> list[bool]:
        """A face is embedded once its tracklet is confirmed (a face coming out from behind something is
        half hidden for its first frames), then again when its last embedding is old: the gap grows
        with the time since the first (`embed_near_every` up to `embed_every` frames), so a new face
        gets several views early and a long one a few a second; while another face is near, every
        `embed_near_every` frames (crossings are where the tracker needs appearance)."""
        wants = []
        for owner, near in zip(owners, near_others(faces)):
            if owner.tracklet_id not in self.embedded:
                wants.append(len(owner.frames) + 1 >= self.min_hits)
                continue
            first, last = self.embedded[owner.tracklet_id]
            gap = min(max(last - first, self.cfg.embed_near_every), self.cfg.embed_every)
            wants.append(frame_index - last >= (self.cfg.embed_near_every if near else gap))
        return wants

    def record(self, frame_index: int, faces: list[Face], owners: list[Tracklet]) -> None:
        for face, owner in zip(faces, owners):
            owner.add(frame_index, face)
            if face.embedding is not None:
                first, _ = self.embedded.get(owner.tracklet_id, (frame_index, frame_index))
                self.embedded[owner.tracklet_id] = (first, frame_index)
