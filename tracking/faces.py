"""What tracking hands to the rest of the pipeline: faces in a frame, tracks over time, the whole set."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ReelfaceError

FORMAT_VERSION = 1


@dataclass
class Face:
    """One detection. box: x1,y1,x2,y2; landmarks (5,2) in RetinaFace order (eyes, nose, mouth corners)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    embedding: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, np.float32).reshape(4)
        self.landmarks = np.asarray(self.landmarks, np.float32).reshape(5, 2)
        self.score = float(self.score)
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, np.float32)

    @property
    def size(self) -> float:
        """Short side of the box in pixels: what min_face / small_face compare against."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Track:
    """One face followed through one shot. Arrays are indexed like `frames` (sorted, no duplicates).

    `detected[i]` is False where the frame was bridged by the motion model (detection stride or a
    missed detection) rather than measured; `raw_landmarks` there hold the prediction.
    """

    track_id: int
    person_id: int
    shot: int
    frames: list[int]
    boxes: np.ndarray  # (N, 4)
    landmarks: np.ndarray  # (N, 5, 2) smoothed
    raw_landmarks: np.ndarray  # (N, 5, 2) as detected
    scores: np.ndarray  # (N,)
    detected: np.ndarray  # (N,) bool
    embedding: np.ndarray | None = None  # mean of the detections' embeddings, L2-normalised

    def __len__(self) -> int:
        return len(self.frames)

    def index_of(self, frame_index: int) -> int | None:
        i = int(np.searchsorted(self.frames, frame_index))
        return i if i < len(self.frames) and self.frames[i] == frame_index else None

    def summary(self) -> dict:
        sizes = np.minimum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
        return {
            "track_id": self.track_id, "person_id": self.person_id, "shot": self.shot,
            "first_frame": self.frames[0], "last_frame": self.frames[-1], "length": len(self.frames),
            "detected": int(self.detected.sum()), "mean_score": round(float(self.scores[self.detected].mean()), 4)
            if self.detected.any() else 0.0,
            "median_size": round(float(np.median(sizes)), 1),
        }


def _round(a: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


@dataclass
class TrackSet:
    tracks: list[Track]
    cuts: list[int]  # frame indices where a new shot starts (frame 0 is not listed)
    frame_count: int
    _index: dict[int, list[tuple[Track, int]]] | None = field(default=None, repr=False, compare=False)

    def faces_at(self, frame_index: int) -> list[tuple[Track, int]]:
        """(track, i) for every track present in that frame; track.boxes[i] etc. are its values there."""
        if self._index is None:
            index: dict[int, list[tuple[Track, int]]] = {}
            for track in self.tracks:
                for i, f in enumerate(track.frames):
                    index.setdefault(f, []).append((track, i))
            self._index = index
        return self._index.get(frame_index, [])

    @property
    def person_ids(self) -> list[int]:
        return sorted({t.person_id for t in self.tracks})

    def shot_of(self, frame_index: int) -> int:
        return int(np.searchsorted(self.cuts, frame_index, side="right"))

    def to_dict(self) -> dict:
        tracks = [{
            "track_id": t.track_id, "person_id": t.person_id, "shot": t.shot, "frames": list(map(int, t.frames)),
            "boxes": _round(t.boxes, 2), "landmarks": _round(t.landmarks), "raw_landmarks": _round(t.raw_landmarks),
            "scores": _round(t.scores, 4), "detected": t.detected.astype(int).tolist(),
            "embedding": None if t.embedding is None else _round(t.embedding, 5),
        } for t in self.tracks]
        frames = []
        for f in range(self.frame_count):
            faces = [{"track_id": t.track_id, "person_id": t.person_id, "box": _round(t.boxes[i], 2),
                      "landmarks": _round(t.landmarks[i]), "score": round(float(t.scores[i]), 4),
                      "detected": bool(t.detected[i])} for t, i in self.faces_at(f)]
            frames.append({"frame": f, "shot": self.shot_of(f), "faces": faces})
        return {
            "version": FORMAT_VERSION, "frame_count": self.frame_count, "cuts": list(map(int, self.cuts)),
            "shots": [[a, b] for a, b in zip([0, *self.cuts], [*self.cuts, self.frame_count])],
            "persons": self.person_ids,
            "summary": [t.summary() for t in self.tracks],
            "tracks": tracks,
            "frames": frames,
        }

    def to_json(self, path: str | Path) -> None:
        from pipeline.outputs import written

        with written(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def from_json(cls, path: str | Path) -> TrackSet:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ReelfaceError(f"cannot read tracks file {path}: {exc}; write it with `reelface analyze`") from None
        if data.get("version") != FORMAT_VERSION:
            raise ReelfaceError(f"{path} has tracks format {data.get('version')}, expected {FORMAT_VERSION}: "
                                "run `reelface analyze` again")
        tracks = []
        for t in data["tracks"]:
            n = len(t["frames"])
            tracks.append(Track(
                track_id=t["track_id"], person_id=t["person_id"], shot=t["shot"], frames=list(t["frames"]),
                boxes=np.asarray(t["boxes"], np.float32).reshape(n, 4),
                landmarks=np.asarray(t["landmarks"], np.float32).reshape(n, 5, 2),
                raw_landmarks=np.asarray(t["raw_landmarks"], np.float32).reshape(n, 5, 2),
                scores=np.asarray(t["scores"], np.float32).reshape(n),
                detected=np.asarray(t["detected"], bool).reshape(n),
                embedding=None if t["embedding"] is None else np.asarray(t["embedding"], np.float32)))
        return cls(tracks=tracks, cuts=list(data["cuts"]), frame_count=int(data["frame_count"]))
