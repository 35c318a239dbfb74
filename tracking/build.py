"""Chunks of detections -> TrackSet: shot cuts, tracking per shot, re-identification, person ids, smoothing."""

from __future__ import annotations

import numpy as np

from pipeline.errors import ReelfaceError

from .detect import ChunkDetections
from .embedders import normalise, same_person_threshold
from .faces import Track, TrackSet
from .shots import find_cuts, pair_score
from .smoothing import rts_smooth
from .tracker import Tracker, Tracklet, assign_persons, link_tracklets


def join_chunks(chunks: list[ChunkDetections], frame_count: int):
    """Per-frame faces, detected flags and shot scores of the whole video, in frame order."""
    chunks = sorted(chunks, key=lambda c: c.start)
    expected = 0
    for c in chunks:
        if c.start != expected:
            raise ReelfaceError(f"detections cover frames up to {expected} but the next chunk starts at {c.start}: "
                                "a chunk is missing (delete the work dir and run again)")
        expected = c.stop
    if expected != frame_count:
        raise ReelfaceError(f"detections cover {expected} frames, the video has {frame_count}")
    faces = [f for c in chunks for f in c.faces]
    detected = np.concatenate([c.detected for c in chunks]) if chunks else np.zeros(0, bool)
    scores = np.concatenate([c.shot_scores for c in chunks]) if chunks else np.zeros(0)
    for before, after in zip(chunks, chunks[1:]):
        scores[after.start] = pair_score(before.last_thumbnail, after.first_thumbnail)
    return faces, detected, scores


def _track_from(group: list[Tracklet], shot_range: tuple[int, int], cfg, stride: int) -> Track:
    """One track from linked tracklets: observed frames, gaps up to the bridge limit filled, the rest
    left as holes (a face hidden for long must not be painted over its occluder), smoothed."""
    observed = {f: face for t in group for f, face in zip(t.frames, t.faces)}
    frames_obs = sorted(observed)
    bridge = max(cfg.track.bridge_gap, 2 * stride - 1)
    reach = (stride - 1) // 2  # with a stride the face was probably there about half a step longer
    segments, seg = [], [frames_obs[0]]
    for f in frames_obs[1:]:
        if f - seg[-1] - 1 <= bridge:
            seg.append(f)
        else:
            segments.append(seg)
            seg = [f]
    segments.append(seg)

    frames, boxes, landmarks, raw, scores, det = [], [], [], [], [], []
    for seg in segments:
        lo, hi = max(shot_range[0], seg[0] - reach), min(shot_range[1] - 1, seg[-1] + reach)
        span = np.arange(lo, hi + 1)
        has = np.isin(span, seg)
        values = np.zeros((len(span), 14))
        for k, f in enumerate(span):
            if has[k]:
                values[k] = np.concatenate([observed[f].box, observed[f].landmarks.ravel()])
        size = float(np.median([observed[f].size for f in seg]))
        raw_filled = rts_smooth(values, has, size, 0.0)
        smooth = rts_smooth(values, has, size, cfg.track.smoothing)
        frames += span.tolist()
        boxes.append(smooth[:, :4])
        landmarks.append(smooth[:, 4:].reshape(-1, 5, 2))
        raw.append(raw_filled[:, 4:].reshape(-1, 5, 2))
        scores.append(np.array([observed[f].score if h else 0.0 for f, h in zip(span, has)], np.float32))
        det.append(has)
    sums = [t.embedding_sum for t in group if t.embedding_sum is not None]
    return Track(track_id=-1, person_id=-1, shot=-1, frames=frames, boxes=np.concatenate(boxes),
                 landmarks=np.concatenate(landmarks), raw_landmarks=np.concatenate(raw),
                 scores=np.concatenate(scores), detected=np.concatenate(det),
                 embedding=normalise(np.sum(sums, 0)) if sums else None)


def build_tracks(chunk_detections: list[ChunkDetections], frame_count: int, cfg) -> TrackSet:
    """Tracks for the whole video: no track crosses a cut; ids by first frame; person ids across shots."""
    faces, detected, scores = join_chunks(chunk_detections, frame_count)
    cuts = find_cuts(scores, cfg.track.shot_threshold)
    same_person = same_person_threshold(cfg)
    stride = max(1, cfg.detect.stride)
    tracks: list[Track] = []
    bounds = [0, *cuts, frame_count]
    for shot, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        tracker = Tracker(cfg.track, same_person, stride)
        for f in range(lo, hi):
            if detected[f]:
                tracker.update(f, faces[f])
        for group in link_tracklets(tracker.finish(), same_person):
            track = _track_from(group, (lo, hi), cfg, stride)
            track.shot = shot
            tracks.append(track)
    tracks.sort(key=lambda t: (t.frames[0], t.boxes[0, 0]))
    persons = assign_persons([t.embedding for t in tracks], [t.frames for t in tracks], same_person)
    for i, (track, person) in enumerate(zip(tracks, persons)):
        track.track_id, track.person_id = i, person
    return TrackSet(tracks=tracks, cuts=cuts, frame_count=frame_count)
