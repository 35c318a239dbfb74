"""Shot cuts from the frames detection already decodes, scored by PySceneDetect's ContentDetector.

Detection runs per chunk (maybe on other machines), so the scoring is split in two:
- per chunk (`ShotScorer`): the ContentDetector score of every frame against the one before it, plus
  the chunk's first and last thumbnails, so the driver can score the frame pair across a chunk border;
- on the driver (`find_cuts`): thresholds the whole score series. A cut is a frame whose score passes
  `track.shot_threshold` and stands out from its neighbours (AdaptiveDetector's idea: fast motion lifts
  a whole run of frames, a cut lifts one), at least `MIN_SHOT_FRAMES` after the previous cut.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

MIN_SHOT_FRAMES = 15  # PySceneDetect's default min_scene_len
ADAPTIVE_RATIO = 3.0  # AdaptiveDetector's default: score over the mean of its neighbours
ADAPTIVE_WINDOW = 2  # neighbours on each side (AdaptiveDetector's window_width)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """The BGR frame PySceneDetect would score: downscaled to ~256 px wide (its auto-downscale rule)."""
    from scenedetect.scene_manager import compute_downscale_factor

    factor = compute_downscale_factor(rgb.shape[1])
    if factor > 1:
        h, w = rgb.shape[:2]
        rgb = cv2.resize(rgb, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb[..., ::-1])


class ShotScorer:
    """Feeds thumbnails to a ContentDetector and reads back its per-frame `content_val`."""

    def __init__(self) -> None:
        from scenedetect import ContentDetector, StatsManager

        self.detector = ContentDetector()
        self.stats = StatsManager()
        self.detector.stats_manager = self.stats
        self.count = 0

    def score(self, thumb: np.ndarray) -> float:
        """Content change from the previous thumbnail given; NaN for the first."""
        from scenedetect import FrameTimecode

        timecode = FrameTimecode(self.count, fps=Fraction(30))  # only used as a key into the stats
        self.detector.process_frame(timecode, thumb)
        value = self.stats.get_metrics(timecode, ["content_val"])[0] if self.count else None
        self.count += 1
        return float("nan") if value is None else float(value)


def pair_score(before: np.ndarray, after: np.ndarray) -> float:
    """Score of `after` against `before` (two thumbnails of one size): the frame pair at a chunk border."""
    scorer = ShotScorer()
    scorer.score(before)
    return scorer.score(after)


def find_cuts(scores: np.ndarray, threshold: float) -> list[int]:
    """Frame indices that start a new shot. scores[i] compares frame i with frame i-1 (scores[0] unused)."""
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)
    cuts: list[int] = []
    last = 0
    for i in range(1, len(scores)):
        if scores[i] < threshold or i - last < MIN_SHOT_FRAMES:
            continue
        lo, hi = max(1, i - ADAPTIVE_WINDOW), min(len(scores), i + ADAPTIVE_WINDOW + 1)
        neighbours = np.concatenate([scores[lo:i], scores[i + 1:hi]])
        if len(neighbours) and scores[i] < ADAPTIVE_RATIO * neighbours.mean():
            continue
        cuts.append(i)
        last = i
    return cuts
