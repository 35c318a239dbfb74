"""Faces followed from one detected frame to the next while a chunk is detected: where to look for them
in the next frame (`expected`), and which faces need an embedding: a face new to the chunk, one whose
last embedding is old, or one that motion alone cannot tell from another face.

This is a motion-only pass of the tracker's own association (`tracker.associate`, Kalman boxes); the
tracks themselves are still built from the detections on the driver (`tracking.build`).
"""

from __future__ import annotations

import cv2
import numpy as np

from .embedders import Embedder, recognisable
from .faces import Face
from .kalman import KalmanBoxTracker
from .tracker import Tracklet, associate, hits_to_confirm, motion_gate


# Two aligned pictures of a face (the embedder's own, 32x32 grey) correlated at least this much are the
# same view: measured, dlib's embeddings of such pairs had cosine >= 0.987 (305 pairs of one track's
# faces from hamilton.mp4 and the generated tracking clip; mean 0.998; same person: 0.95), so the last
# embedding is reused and the network (~10-18 CPU ms a face in torch, ~130 in dlib's own) not run. On
# hamilton few pairs are that close (52 of 1615 pairs, real faces move); on still faces most are.
SAME_VIEW = 0.98


def view_signature(chip: np.ndarray) -> np.ndarray:
    """An aligned face picture as a unit vector: 32x32 grey, mean removed (dot product = correlation)."""
    grey = cv2.resize(cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY).astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    grey -= grey.mean()
    return (grey / max(float(np.linalg.norm(grey)), 1e-6)).ravel()


def contested(gate: np.ndarray) -> np.ndarray:
    """(F,) bool from a (T, F) motion gate: the face could be more than one tracklet, or its tracklet
    could be another face too. There motion cannot keep identities apart and the tracker needs
    appearance (crossings); faces side by side, however close, are each in their own gate only."""
    shared_tracklet = gate & (gate.sum(1, keepdims=True) >= 2)
    return (gate.sum(0) >= 2) | shared_tracklet.any(0)


class Follower:
    """Known faces of the current shot; tracklets not seen for `keep` frames are forgotten, but still
    looked for (`expected`) along their motion up to `search` frames: a face walking behind something
    comes out where it was heading."""

    def __init__(self, track_cfg, same_person: float, keep: int, stride: int, search: int):
        self.cfg, self.same_person, self.keep, self.search = track_cfg, same_person, keep, search
        self.min_hits = hits_to_confirm(track_cfg, stride)
        self.tracklets: list[Tracklet] = []
        self.lost: list[Tracklet] = []  # forgotten, still looked for
        self.embedded: dict[int, tuple[int, int]] = {}  # tracklet id -> frames of its first and last embedding
        self.views: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # tracklet id -> view and embedding last computed
        self.next_id = 0

    def clear(self) -> None:
        """A shot cut: nothing seen before it is expected after it."""
        self.tracklets, self.lost = [], []

    def expected(self, frame_index: int) -> list[np.ndarray]:
        """Boxes where the faces followed or lost are expected in `frame_index` (Kalman prediction)."""
        self.lost = [t for t in self.lost if frame_index - t.last_frame <= self.search]
        self.lost += [t for t in self.tracklets if frame_index - t.last_frame > self.keep]
        self.tracklets = [t for t in self.tracklets if frame_index - t.last_frame <= self.keep]
        for t in self.tracklets + self.lost:
            t.kalman.predict(frame_index)
        return [t.kalman.box for t in self.tracklets + self.lost]

    def follow(self, frame_index: int, faces: list[Face]) -> tuple[list[Tracklet], np.ndarray]:
        """The tracklet of each face (a new one for a face nobody expected), and whether motion alone
        could confuse it with another (`contested`); call `record` after."""
        self.expected(frame_index)
        unsure = contested(motion_gate(self.tracklets, faces)[1])
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
        return owners, unsure

    def wants_embedding(self, frame_index: int, owners: list[Tracklet], unsure: np.ndarray) -> list[bool]:
        """A face is embedded once its tracklet is confirmed (a face coming out from behind something is
        half hidden for its first frames), then again when its last embedding is old: the gap grows
        with the time since the first (`embed_near_every` up to `embed_every` frames), so a new face
        gets several views early (person ids link tracks by their mean embedding) and a long one a few
        a second; while motion could confuse it with another face (`follow`'s `unsure`: crossings,
        where the tracker needs appearance), every `embed_near_every` frames. Faces side by side keep
        to their own gates and are not embedded more often: the network costs ~10-18 CPU ms a face."""
        wants = []
        for owner, near in zip(owners, unsure):
            if owner.tracklet_id not in self.embedded:
                wants.append(len(owner.frames) + 1 >= self.min_hits)
                continue
            first, last = self.embedded[owner.tracklet_id]
            gap = min(max(last - first, self.cfg.embed_near_every), self.cfg.embed_every)
            wants.append(frame_index - last >= (self.cfg.embed_near_every if near else gap))
        return wants

    def embed(self, frame_index: int, frame_rgb: np.ndarray, faces: list[Face], owners: list[Tracklet],
              unsure: np.ndarray, embedder: Embedder) -> None:
        """Sets `embedding` on the faces that want one (`wants_embedding`) and are `recognisable`. Where a
        face shows the same view as when its tracklet's last embedding was computed (`SAME_VIEW`), that
        embedding is reused."""
        wanted = [k for k, want in enumerate(self.wants_embedding(frame_index, owners, unsure))
                  if want and recognisable(frame_rgb, faces[k], faces)]
        fresh = []
        for k, chip in zip(wanted, embedder.align(frame_rgb, [faces[k] for k in wanted])):
            signature = view_signature(chip)
            last = self.views.get(owners[k].tracklet_id)
            if last is not None and float(last[0] @ signature) >= SAME_VIEW:
                faces[k].embedding = last[1]
            else:
                fresh.append((k, chip, signature))
        for (k, _, signature), vector in zip(fresh, embedder.describe([chip for _, chip, _ in fresh])):
            faces[k].embedding = vector
            self.views[owners[k].tracklet_id] = (signature, vector)

    def record(self, frame_index: int, faces: list[Face], owners: list[Tracklet]) -> None:
        for face, owner in zip(faces, owners):
            owner.add(frame_index, face)
            if face.embedding is not None:
                first, _ = self.embedded.get(owner.tracklet_id, (frame_index, frame_index))
                self.embedded[owner.tracklet_id] = (first, frame_index)
