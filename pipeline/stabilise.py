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

import cv2
import numpy as np

from .crop_flow import RunFlows

RADIUS = 4  # frames each side
FB_TOLERANCE = 0.5  # px at flow size; forward-backward mismatch where a link's confidence is exp(-1/2)
CHANGE_TOLERANCE = 3.0  # x the input's own noise: a moved input differing more than this is not the same point
CHANGE_BLUR = 1.5  # px at flow size; the change test is on blurred images so noise does not count


class _Links:
    """Flows and confidences between consecutive input crops, at crop_flow.flow_size and upsampled to crop size."""

    def __init__(self, inputs: list[np.ndarray]):
        flows = RunFlows(inputs)
        self.size = flows.size
        full = np.mgrid[0:self.size, 0:self.size].astype(np.float32)
        self.grid = (full[1], full[0])
        # link k pulls crop k+1 onto crop k (to_next) or crop k onto crop k+1 (to_prev)
        self.to_next: list[tuple[np.ndarray, np.ndarray]] = []
        self.to_prev: list[tuple[np.ndarray, np.ndarray]] = []
        for a in range(len(inputs) - 1):
            fwd, bwd = flows.flow(a, a + 1), flows.flow(a + 1, a)  # grey_a(x) ~ grey_a+1(x + fwd)
            self.to_next.append(self._link(fwd, bwd, flows.greys[a + 1], flows.greys[a], flows))
            self.to_prev.append(self._link(bwd, fwd, flows.greys[a], flows.greys[a + 1], flows))

    def _link(self, flow, back, src, dst, flows: RunFlows) -> tuple[np.ndarray, np.ndarray]:
        """(flow at crop size, confidence) of pulling `src` onto `dst`; each link is computed from its own
        two crops only, so a crop's result never depends on how long its run is."""
        mx, my = flows.grid[0] + flow[..., 0], flows.grid[1] + flow[..., 1]
        change = np.abs(cv2.GaussianBlur(cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                                         - dst, (0, 0), CHANGE_BLUR))
        # the pair's own noise (the typical change) sets the scale of "the same point"
        tolerance = CHANGE_TOLERANCE * max(1.4826 * float(np.median(change)), 0.5)
        back_at = cv2.remap(back, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mismatch = ((flow + back_at) ** 2).sum(-1)
        confidence = np.exp(-0.5 * mismatch / FB_TOLERANCE ** 2) * np.exp(-0.5 * (change / tolerance) ** 2)
        return flows.at_crop_size(flow), flows.resized(confidence).astype(np.float32)

    def pull(self, image: np.ndarray, link: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """`image` moved along the link, the link's confidence, and the maps (to move weights the same way)."""
        flow, confidence = link
        mx, my = self.grid[0] + flow[..., 0], self.grid[1] + flow[..., 1]
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), confidence, (mx, my)


def stabilise(inputs: list[np.ndarray], restored: list[np.ndarray], strength: float) -> list[np.ndarray]:
    """Restored crops (float32 HxWx3, 0..255) of one ordered run, filtered along the input's motion.

    `strength` in 0..1 is how much the neighbours count (0: unchanged; the k-th neighbour's weight is
    strength^k times its chained confidence).
    """
    n = len(restored)
    if strength <= 0 or n < 2:
        return list(restored)
    links = _Links(inputs)
    acc = [np.asarray(r, np.float32).copy() for r in restored]
    wsum = [np.ones(r.shape[:2], np.float32) for r in restored]
    # direction +1: crop t gathers t-1, t-2, ... moved forward along to_prev links; -1 the mirror image
    for step, chain in ((1, links.to_prev), (-1, links.to_next)):
        carried = [np.asarray(r, np.float32) for r in restored]
        weight = [np.ones(r.shape[:2], np.float32) for r in restored]
        for _ in range(RADIUS):
            new_carried, new_weight = [None] * n, [None] * n
            for t in range(n):
                src = t - step
                if not 0 <= src < n:
                    continue
                link = chain[min(t, src)]
                moved, confidence, maps = links.pull(carried[src], link)
                w_moved = cv2.remap(weight[src], maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                new_carried[t] = moved
                new_weight[t] = strength * confidence * w_moved
                acc[t] += new_weight[t][..., None] * moved
                wsum[t] += new_weight[t]
            carried = [c if c is not None else np.zeros_like(acc[0]) for c in new_carried]
            weight = [w if w is not None else np.zeros_like(wsum[0]) for w in new_weight]
    return [a / w[..., None] for a, w in zip(acc, wsum)]
