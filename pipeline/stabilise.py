"""Temporal stabilisation after any restorer: restored crops made as steady as the input's own motion.

Per-frame restorers (diffusion, GAN, ONNX) invent slightly different detail in every frame, and even a
multi-frame one can flicker where its windows move on. This stage follows the *input's* motion: the flow
between consecutive input crops (never the restored ones, which would follow the flicker) carries each
restored crop to its neighbours, and every crop becomes a weighted mean of its own restoration and its
neighbours' restorations moved onto it (a filter along motion trajectories, both directions, so there is
no lag). A neighbour counts only where the input itself continues: where the flow fails its forward-
backward check or the moved input differs from the input there (occlusion, blink, cut), the chain
stops, so motion is kept and nothing is dragged across an occlusion.

Guided by the input video as Bonneel et al. (2015) are, but on the restored pixels themselves: what
stays is what the restoration agrees on over time. The window is finite (RADIUS frames each side), so a
frame's result depends only on frames a chunk's context holds.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from .crop_flow import RunFlows, run_parts

RADIUS = 4  # frames each side
FB_TOLERANCE = 0.5  # px at flow size; forward-backward mismatch where a link's confidence is exp(-1/2)
CHANGE_TOLERANCE = 3.0  # x the input's own noise: a moved input differing more than this is not the same point
CHANGE_BLUR = 1.5  # px at flow size; the change test is on blurred images so noise does not count


class _Links:
    """How to pull an input crop onto a neighbouring one: flow and confidence from crop_flow.RunFlows at flow size,
    as a remap map and a weight at crop size."""

    def __init__(self, inputs: list[np.ndarray], strength: float):
        self.flows = RunFlows(inputs)
        self.strength = strength

    def pull(self, dst: int, src: int) -> tuple[np.ndarray, np.ndarray]:
        """(map, strength x confidence) that moves crop `src` onto its neighbour `dst`; computed from the two
        crops only, so a crop's result never depends on how long its run is."""
        flows = self.flows
        maps, mismatch = flows.checked_map(dst, src)  # grey_dst(x) ~ grey_src(maps(x))
        change = np.abs(cv2.GaussianBlur(cv2.remap(flows.greys[src], maps, None, cv2.INTER_LINEAR,
                                                   borderMode=cv2.BORDER_REPLICATE) - flows.greys[dst],
                                         (0, 0), CHANGE_BLUR))
        # the pair's own noise (the typical change) sets the scale of "the same point"
        tolerance = CHANGE_TOLERANCE * max(1.4826 * _median(change), 0.5)
        confidence = np.exp(-0.5 * mismatch / FB_TOLERANCE ** 2) * np.exp(-0.5 * (change / tolerance) ** 2)
        return (flows.crop_map(dst, src),
                self.strength * flows.resized(confidence))  # float32 throughout


def _median(values: np.ndarray) -> float:
    """np.median's value; its own checks and mean cost as much as the partition on flow-size images."""
    flat = values.ravel()
    half = flat.size // 2
    part = np.partition(flat, (half - 1, half))
    return float(part[half] if flat.size % 2 else (part[half - 1] + part[half]) / 2)


def stabilise(inputs: list[np.ndarray], restored: list[np.ndarray], strength: float) -> list[np.ndarray]:
    """Restored crops (float32 HxWx3, 0..255) of one ordered run, filtered along the input's motion.

    `strength` in 0..1 is how much the neighbours count (0: unchanged; the k-th neighbour's weight is
    strength^k times its chained confidence). A crop's result depends only on the crops within RADIUS of
    it, so a long run is cut into consecutive parts stabilised side by side on OpenCV's threads (the cores
    this process was given), each with the RADIUS crops of context on each side it needs, for the same
    numbers as one part.
    """
    n = len(restored)
    if strength <= 0 or n < 2:
        return list(restored)
    restored = [np.asarray(r, np.float32) for r in restored]
    parts = run_parts(n)
    stabilise_part = functools.partial(_stabilise_part, inputs, restored, strength)
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="stabilise") as pool:
        steady = pool.map(stabilise_part, parts)
        return [crop for part in steady for crop in part]


def _stabilise_part(inputs: list[np.ndarray], restored: list[np.ndarray], strength: float,
                    part: range) -> list[np.ndarray]:
    """The crops of `part`, stabilised: the chains start RADIUS crops before the part (forward) and after it
    (backward), and only the part's own crops gather sums."""
    first, last = max(0, part.start - RADIUS), min(len(restored), part.stop + RADIUS)
    links = _Links(inputs[first:last], strength)
    window = restored[first:last]
    own = range(part.start - first, part.stop - first)
    # Images travel as (colour, weight) in one 4-channel array (BGR2BGRA's alpha is 1 for floats): one remap
    # moves both, and a crop's sum is 4-channel too (weighted colour, total weight). Every step is a few
    # whole-array OpenCV calls into reused buffers: numpy on interleaved channels, and fresh full-size arrays
    # (page faults), cost more than the remaps themselves.
    acc = {t: cv2.cvtColor(window[t], cv2.COLOR_BGR2BGRA) for t in own}
    weight = np.empty(window[0].shape[:2], np.float32)
    spread = np.empty(window[0].shape[:2] + (4,), np.float32)  # (w, w, w, 1): adds (w * colour, w) to a sum
    spare: list[np.ndarray] = []
    # direction +1: crop t gathers t-1, ..., t-RADIUS, moved forward link by link; -1 the mirror image.
    # Crop by crop along the direction, chain[k] being crop t - k*step moved onto the crop t just done: the
    # link into the next crop moves the whole chain one further at once, so each link is made once, used,
    # and dropped (RADIUS images and one link held, not every link of the run), and a crop's sum receives
    # its neighbours nearest first in each direction.
    for step, order in ((1, range(own.stop)), (-1, range(len(window) - 1, own.start - 1, -1))):
        chain: list[np.ndarray] = []
        for t in order:
            new = [cv2.cvtColor(window[t], cv2.COLOR_BGR2BGRA, spare.pop() if spare else None)]
            if chain:
                maps, link_weight = links.pull(t, t - step)
                for carried in chain:
                    moved = cv2.remap(carried, maps, None, cv2.INTER_LINEAR, spare.pop() if spare else None,
                                      cv2.BORDER_REPLICATE)
                    cv2.multiply(cv2.extractChannel(moved, 3, weight), link_weight, weight)
                    cv2.insertChannel(weight, moved, 3)
                    if t in acc:  # a context crop only carries the chain on
                        cv2.accumulateProduct(moved, cv2.cvtColor(weight, cv2.COLOR_GRAY2BGRA, spread), acc[t])
                    new.append(moved)
            spare += chain + new[RADIUS:]
            chain = new[:RADIUS]
    return [cv2.cvtColor(cv2.divide(a, cv2.cvtColor(cv2.extractChannel(a, 3), cv2.COLOR_GRAY2BGRA)),
                         cv2.COLOR_BGRA2BGR) for a in acc.values()]
