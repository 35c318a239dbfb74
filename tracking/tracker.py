"""Online multi-face tracking within one shot (SORT style, with appearance), then offline linking.

`Tracker.update(frame_index, faces)` is the one entry point per detected frame; `associate` is the one
association function (cost = IoU/Mahalanobis motion term + embedding term, Hungarian, gates). Tracklets
are born tentative, confirmed after `min_hits` detections, and kept through `max_gap` frames without a
detection so a face coming back from an occlusion is re-identified by motion or appearance.

`link_tracklets` re-identifies offline what the online pass missed (an occlusion longer than
`max_gap`, a face that came back far from where it left): two tracklets of one shot that never share a
frame are joined when their mean embeddings say same person. `assign_persons` then gives tracks of the
same person (in any shot) one person id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from .detectors import box_iou
from .embedders import normalise
from .faces import Face
from .kalman import CHI2_GATE_4DOF, KalmanBoxTracker

INFEASIBLE = 1e6
MIN_IOU = 0.3  # SORT's association threshold


@dataclass
class Tracklet:
    tracklet_id: int
    kalman: KalmanBoxTracker
    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    embedding_sum: np.ndarray | None = None

    def add(self, frame_index: int, face: Face) -> None:
        self.frames.append(frame_index)
        self.faces.append(face)
        if face.embedding is not None:
            self.embedding_sum = face.embedding.copy() if self.embedding_sum is None else self.embedding_sum + face.embedding

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.embedding_sum is None else normalise(self.embedding_sum)

    @property
    def last_frame(self) -> int:
        return self.frames[-1]


def embedding_distance(cosine: float, same_person: float) -> float:
    """0 for identical embeddings, 0.5 at the same-person threshold, 1 well below it."""
    return float(np.clip((1.0 - cosine) / (1.0 - same_person) / 2.0, 0.0, 1.0))


def motion_gate(tracklets: list[Tracklet], faces: list[Face]) -> tuple[np.ndarray, np.ndarray]:
    """(T, F) IoU of each face with each tracklet's predicted box, and whether motion alone allows the
    pair: inside the Kalman gate, or overlapping by SORT's IoU criterion (the detector's box size on a
    blurred face can jump by more than the Kalman noise allows while the box still clearly overlaps)."""
    boxes = np.array([f.box for f in faces]).reshape(-1, 4)
    iou = box_iou(np.array([t.kalman.box for t in tracklets]).reshape(-1, 4), boxes)
    gate = np.array([t.kalman.mahalanobis2(boxes) <= CHI2_GATE_4DOF for t in tracklets], bool).reshape(iou.shape)
    return iou, gate | (iou >= MIN_IOU)


def associate(tracklets: list[Tracklet], faces: list[Face], iou_weight: float, embedding_weight: float,
              max_cost: float, same_person: float) -> tuple[list[tuple[int, int]], list[int]]:
    """Match predicted tracklets to detections. Returns (tracklet index, face index) pairs and the
    indices of unmatched faces.

    Motion term: 1 - IoU with the Kalman-predicted box. The Mahalanobis distance is only a gate: a
    tracklet lost for a while has a wide covariance, so as a cost it would make it the cheapest match
    for every face near it (seen on hamilton.mp4: a stale tracklet stole a face from its own track).
    A pair is allowed when the motion gate passes or the embeddings say same person; the embedding
    term then keeps identities apart where boxes overlap (crossings).
    """
    if not tracklets or not faces:
        return [], list(range(len(faces)))
    iou, gate = motion_gate(tracklets, faces)
    cost = np.full((len(tracklets), len(faces)), INFEASIBLE)
    for i, t in enumerate(tracklets):
        motion = 1.0 - iou[i]
        t_emb = t.embedding
        for j, face in enumerate(faces):
            if t_emb is not None and face.embedding is not None:
                cosine = float(t_emb @ face.embedding)
                emb = embedding_distance(cosine, same_person)
                if not (gate[i, j] or cosine >= same_person):
                    continue
                c = (iou_weight * motion[j] + embedding_weight * emb) / (iou_weight + embedding_weight)
            elif gate[i, j]:
                c = motion[j]
            else:
                continue
            cost[i, j] = c
    rows, cols = linear_sum_assignment(cost)
    matches = [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= max_cost]
    matched = {c for _, c in matches}
    return matches, [j for j in range(len(faces)) if j not in matched]


def hits_to_confirm(track_cfg, stride: int) -> int:
    """Detections before a tracklet is confirmed: min_hits counts frames of evidence, and with a
    detection stride fewer detections cover as many frames."""
    return max(2, -(-track_cfg.min_hits // max(1, stride)))


class Tracker:
    """Follows faces through one shot. Feed it every detected frame in order, then call `finish`."""

    def __init__(self, track_cfg, same_person: float, stride: int = 1):
        self.cfg = track_cfg
        self.same_person = same_person
        self.min_hits = hits_to_confirm(track_cfg, stride)
        self.next_id = 0
        self.active: list[Tracklet] = []
        self.done: list[Tracklet] = []

    def update(self, frame_index: int, faces: list[Face]) -> None:
        for t in self.active:
            t.kalman.predict(frame_index)
        matches, unmatched = associate(self.active, faces, self.cfg.iou_weight, self.cfg.embedding_weight,
                                       self.cfg.max_cost, self.same_person)
        matched_tracklets = set()
        for ti, fi in matches:
            t = self.active[ti]
            t.kalman.update(faces[fi])
            t.add(frame_index, faces[fi])
            matched_tracklets.add(ti)
        still = []
        for ti, t in enumerate(self.active):
            if ti in matched_tracklets or self._alive(t, frame_index):
                still.append(t)
            elif self._confirmed(t):
                self.done.append(t)
        for fi in unmatched:
            t = Tracklet(self.next_id, KalmanBoxTracker(faces[fi], frame_index))
            t.add(frame_index, faces[fi])
            self.next_id += 1
            still.append(t)
        self.active = still

    def _confirmed(self, t: Tracklet) -> bool:
        return len(t.frames) >= self.min_hits

    def _alive(self, t: Tracklet, frame_index: int) -> bool:
        # a tentative tracklet that misses a detection is a false positive (SORT); a confirmed one waits
        # max_gap frames to be re-identified
        if not self._confirmed(t):
            return False
        return frame_index - t.last_frame <= self.cfg.max_gap

    def finish(self) -> list[Tracklet]:
        """Confirmed tracklets of the shot, by first frame."""
        done = self.done + [t for t in self.active if self._confirmed(t)]
        self.active, self.done = [], []
        return sorted(done, key=lambda t: (t.frames[0], t.tracklet_id))


def overlaps(a: list[int], b: list[int]) -> bool:
    return bool(set(a) & set(b))


def link_tracklets(tracklets: list[Tracklet], same_person: float) -> list[list[Tracklet]]:
    """Offline re-identification within one shot: chain tracklets that never share a frame and whose
    mean embeddings match, best match first. Returns groups (one group = one track)."""
    groups = [[t] for t in tracklets]

    def frames_of(g):
        return [f for t in g for f in t.frames]

    def embedding_of(g):
        sums = [t.embedding_sum for t in g if t.embedding_sum is not None]
        return normalise(np.sum(sums, 0)) if sums else None

    while True:
        best, pair = same_person, None
        for a in range(len(groups)):
            ea = embedding_of(groups[a])
            if ea is None:
                continue
            for b in range(a + 1, len(groups)):
                eb = embedding_of(groups[b])
                if eb is None or overlaps(frames_of(groups[a]), frames_of(groups[b])):
                    continue
                cosine = float(ea @ eb)
                if cosine >= best:
                    best, pair = cosine, (a, b)
        if pair is None:
            return groups
        a, b = pair
        groups[a] = sorted(groups[a] + groups[b], key=lambda t: t.frames[0])
        del groups[b]


def assign_persons(embeddings: list[np.ndarray | None], frames: list[list[int]], same_person: float) -> list[int]:
    """Person id per track: average-linkage clustering of track embeddings, merging while the best pair
    of clusters is above `same_person`; two tracks seen in the same frame are never one person, and a
    track without an embedding stays a person of its own."""
    n = len(embeddings)
    has = np.array([e is not None for e in embeddings])
    sim = np.full((n, n), -np.inf)
    if has.any():
        vectors = np.stack([e for e in embeddings if e is not None])
        idx = np.nonzero(has)[0]
        sim[np.ix_(idx, idx)] = vectors @ vectors.T
    spans = np.array([(min(f), max(f)) for f in frames]).reshape(n, 2)
    conflict = (spans[:, None, 0] <= spans[None, :, 1]) & (spans[None, :, 0] <= spans[:, None, 1])
    for i, j in zip(*np.nonzero(np.triu(conflict, 1))):  # spans overlap: do they share a frame?
        conflict[i, j] = conflict[j, i] = bool(set(frames[i]) & set(frames[j]))
    sim[conflict] = -np.inf
    np.fill_diagonal(sim, -np.inf)
    members = {i: [i] for i in range(n)}
    while members:
        a, b = np.unravel_index(np.argmax(sim), sim.shape)
        if sim[a, b] < same_person:
            break
        na, nb = len(members[a]), len(members[b])
        merged = (na * sim[a] + nb * sim[b]) / (na + nb)  # average linkage (Lance-Williams)
        merged[conflict[a] | conflict[b]] = -np.inf
        sim[a], sim[:, a] = merged, merged
        sim[a, a] = -np.inf
        conflict[a] |= conflict[b]
        conflict[:, a] = conflict[a]
        sim[b], sim[:, b] = -np.inf, -np.inf
        members[a] += members.pop(b)
    person = [0] * n
    for pid, group in enumerate(sorted(members.values(), key=min)):
        for i in group:
            person[i] = pid
    return person
