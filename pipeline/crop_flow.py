"""Dense optical flow between a track's face crops: one setting and one computation for fusion and the
temporal stage.

Crops are enlarged 1.5x from the frame (process.crop_geometry), so flow is computed at half the crop
size, about the face's own resolution: nothing much finer exists to follow. DIS's MEDIUM preset, because FAST
stops refining at a quarter of the image's resolution: on real faces (expressions, head turns) its
misalignment was most of the temporal change fusion added (face E_warp over the input's 2.06 on hamilton
with FAST at 128 px, 0.60 with MEDIUM at half crop size; benchmarks/README.md, issue 10).

Only neighbouring crops are matched by DIS; the flow between crops further apart is the chain of
neighbouring flows composed: 2 matches a crop instead of 14 for fusion's 15-frame window, for the same
quality on the real and generated clips (benchmarks/README.md, issue 10). A neighbouring pair's flow
depends on nothing but the two crops, so it is kept in a small cache keyed by their content: the
stabilisation stage finds what fusion computed on the same crops. Both cut a long run into the same kind
of parts to work on side by side (`run_parts`).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import threading

import cv2
import numpy as np

MAX_SIZE = 256  # px; larger faces have their flow at this size (the cost grows with its square)
MIN_SIZE = 32
PRESMOOTH = 0.7  # px at flow size; noise would otherwise pull the flow
LUMA = np.array([[0.299, 0.587, 0.114]], np.float32)
CACHE_BYTES = 64 << 20  # neighbouring flows kept for reuse (256 px flows: 64 crops' worth, both ways)
# at least this many crops per part of a run worked on by its own thread (a part also takes the context
# crops around it, and flows a few neighbouring pairs twice): 23 crops of 640 px, a call of the largest
# faces, cost no more CPU in two parts than in one (fusion 5.15-5.39 s against 5.55-5.72, in 0.70x the
# time; the stabiliser 0.79-0.93 s against 1.01-1.09 wall; scratch /work/exp/parts_cost.py); at 16 crops
# such calls ran on one thread
PART_CROPS = 8


def run_parts(n: int) -> list[range]:
    """Consecutive, equal parts of a run of n crops to work on side by side: as many as OpenCV's threads
    (the cores this process was given; Ray tasks set them to theirs), each of PART_CROPS crops or more."""
    count = max(1, min(cv2.getNumThreads(), n // PART_CROPS))
    bounds = np.linspace(0, n, count + 1).round().astype(int)
    return [range(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def flow_size(crop_size: int) -> int:
    """Side of the images flow is computed on for crops of crop_size."""
    return min(max(crop_size // 2, MIN_SIZE), MAX_SIZE)


class _FlowCache:
    """Neighbouring flows by the content of their two grey images, least recently used dropped first."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._flows: collections.OrderedDict[tuple[bytes, bytes], np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()  # the restorer and the finishing thread both read and fill it

    def get(self, key: tuple[bytes, bytes]) -> np.ndarray | None:
        with self._lock:
            flow = self._flows.get(key)
            if flow is not None:
                self._flows.move_to_end(key)
            return flow

    def put(self, key: tuple[bytes, bytes], flow: np.ndarray) -> None:
        flow.flags.writeable = False  # shared between callers
        with self._lock:
            if key in self._flows:
                return
            self._flows[key] = flow
            self.bytes += flow.nbytes
            while self.bytes > self.max_bytes:
                self.bytes -= self._flows.popitem(last=False)[1].nbytes


_cache = _FlowCache(CACHE_BYTES)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """(size, size, 2) float32 pixel coordinates (x, y): one two-channel map, which cv2.remap reads faster
    than two single-channel ones, for the same result. Shared read-only."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    grid = np.dstack([x, y])
    grid.flags.writeable = False
    return grid


class RunFlows:
    """Flow between any two crops of one ordered run of a track, at flow size.

    `crops` are RGB (H, W, 3) 0..255; `greys` their luma at flow size, lightly smoothed (float), the
    images the flow matches; `flow(i, j)` is f with grey_i(x) ~ grey_j(x + f(x)).
    """

    def __init__(self, crops):
        self.size = crops[0].shape[0]
        self.flow_size = small = flow_size(self.size)
        self.greys = [cv2.GaussianBlur(cv2.resize(cv2.transform(np.asarray(c, np.float32), LUMA), (small, small),
                                                  interpolation=cv2.INTER_AREA), (0, 0), PRESMOOTH) for c in crops]
        self._u8 = [np.clip(g, 0, 255).astype(np.uint8) for g in self.greys]
        self._keys = [hashlib.blake2b(g.tobytes(), digest_size=16).digest() for g in self._u8]
        self.grid = _grid(small)  # (x, y) of every pixel at flow size: a flow plus it is a remap map
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._flows: dict[tuple[int, int], np.ndarray] = {}
        self._maps: dict[tuple[int, int], np.ndarray] = {}

    def flow(self, i: int, j: int) -> np.ndarray:
        if (i, j) in self._flows:
            return self._flows[(i, j)]
        if abs(j - i) == 1:
            key = (self._keys[i], self._keys[j])
            f = _cache.get(key)
            if f is None:
                f = self._dis.calc(self._u8[i], self._u8[j], None)
                _cache.put(key, f)
        else:  # through the next crop towards j: f_ij(x) = f_ik(x) + f_kj(x + f_ik(x))
            k = i + (1 if j > i else -1)
            f = self.flow(i, k) + cv2.remap(self.flow(k, j), self.map(i, k), None, cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE)
        self._flows[(i, j)] = f
        return f

    def map(self, i: int, j: int) -> np.ndarray:
        """The remap map at flow size that pulls grey j onto grey i (the grid plus the flow); kept, since a
        crop's first step is the map of every longer chain from it, and its check's too."""
        if (i, j) not in self._maps:
            self._maps[(i, j)] = self.grid + self.flow(i, j)
        return self._maps[(i, j)]

    def checked_map(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """The remap map at flow size that pulls crop j onto crop i, and the squared forward-backward
        mismatch of that flow (px^2 at flow size: large where the two flows disagree, at occlusions)."""
        maps = self.map(i, j)
        back = cv2.remap(self.flow(j, i), maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        squares = (self.flow(i, j) + back) ** 2
        return maps, squares[..., 0] + squares[..., 1]  # numpy's sum(-1) over two channels is many times slower

    def crop_map(self, i: int, j: int) -> np.ndarray:
        """The remap map at crop size that pulls crop j onto crop i: the flow scaled to the crops' own size
        (scaled before it is resized, on a quarter of the pixels)."""
        if self.flow_size == self.size:
            return self.map(i, j)
        f = self.resized(self.flow(i, j) * np.float32(self.size / self.flow_size))
        return np.add(f, _grid(self.size), out=f)

    def forget_before(self, k: int) -> None:
        """Drop the composed flows and maps that involve a crop before k (a caller moving along the run)."""
        for kept in (self._flows, self._maps):
            for pair in [p for p in kept if min(p) < k]:
                del kept[pair]

    def resized(self, image: np.ndarray) -> np.ndarray:
        """An image at flow size (weights, confidences, colour), resized to the crops' own size."""
        if self.flow_size == self.size:
            return image
        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
