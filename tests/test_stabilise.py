"""The temporal stabilisation stage: flicker a restorer adds is removed along the input's motion, motion
and occlusions are kept, and nothing changes at strength 0."""

import cv2
import numpy as np

from pipeline.stabilise import RADIUS, _Links, stabilise


def _texture(size=128, seed=0):
    rng = np.random.default_rng(seed)
    grey = cv2.resize(rng.uniform(40, 215, (size // 8, size // 8)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC)
    return np.repeat(grey[..., None], 3, -1)


def _moving(n=12, size=128, speed=1.5):
    """A texture sliding right by `speed` px a frame: the input crops (clean) and their exact motion."""
    tex = _texture(size + 64)
    return [cv2.warpAffine(tex, np.float32([[1, 0, -32 + speed * t], [0, 1, -32]]), (size, size),
                           flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101) for t in range(n)]


def _flicker(seq):
    """Mean squared change between consecutive frames after undoing the known motion (1.5 px/frame)."""
    out = []
    for t in range(1, len(seq)):
        back = cv2.warpAffine(seq[t - 1], np.float32([[1, 0, 1.5], [0, 1, 0]]), seq[t].shape[1::-1],
                              flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
        out.append(float(((seq[t] - back)[16:-16, 16:-16] ** 2).mean()))
    return float(np.mean(out))


def test_per_frame_detail_is_removed_but_the_motion_is_kept():
    inputs = _moving()
    rng = np.random.default_rng(3)
    # a per-frame restorer: the input plus fine detail that differs in every frame (the flicker)
    restored = [x + cv2.GaussianBlur(rng.normal(0, 8, x.shape).astype(np.float32), (0, 0), 0.8) for x in inputs]
    steady = stabilise(inputs, restored, 0.8)
    assert _flicker(steady) < 0.25 * _flicker(restored)
    # the texture still moves with the input: the result stays close to the input at every frame
    middle = len(inputs) // 2
    err_steady = float(np.abs(steady[middle] - inputs[middle])[16:-16, 16:-16].mean())
    err_restored = float(np.abs(restored[middle] - inputs[middle])[16:-16, 16:-16].mean())
    assert err_steady < 0.6 * err_restored


def test_strength_zero_changes_nothing():
    inputs = _moving(4)
    restored = [x + 3.0 for x in inputs]
    assert all(np.array_equal(a, b) for a, b in zip(stabilise(inputs, restored, 0.0), restored))


def test_an_occluder_is_not_averaged_away():
    inputs = _moving()
    t = len(inputs) // 2
    inputs[t] = inputs[t].copy()
    inputs[t][40:90, 40:90] = 0.0  # something passes in front in one frame only
    restored = [x.copy() for x in inputs]
    steady = stabilise(inputs, restored, 0.8)
    assert float(np.abs(steady[t][50:80, 50:80]).mean()) < 10.0  # still dark (averaging would give ~150)


def test_a_frame_depends_only_on_its_radius():
    """What the chunk context relies on: frames further than RADIUS away do not change a frame."""
    inputs = _moving(2 * RADIUS + 5)
    rng = np.random.default_rng(5)
    restored = [x + rng.normal(0, 4, x.shape).astype(np.float32) for x in inputs]
    t = RADIUS + 2
    whole = stabilise(inputs, restored, 0.8)[t]
    lo, hi = t - RADIUS, t + RADIUS + 1
    part = stabilise(inputs[lo:hi], restored[lo:hi], 0.8)[t - lo]
    assert np.array_equal(whole, part)


def test_parts_side_by_side_give_the_numbers_of_one_part(monkeypatch):
    """A run cut into parts, each stabilised with the RADIUS crops of context it needs on each side, gives
    what one part gives, bit for bit, also around an occluder (where the chained confidences matter)."""
    import pipeline.stabilise as stabilise_module
    from pipeline import crop_flow

    inputs = _moving(3 * RADIUS + 7)
    inputs[RADIUS + 3] = inputs[RADIUS + 3].copy()
    inputs[RADIUS + 3][40:90, 40:90] = 0.0
    rng = np.random.default_rng(9)
    restored = [x + rng.normal(0, 4, x.shape).astype(np.float32) for x in inputs]
    monkeypatch.setattr(crop_flow, "PART_CROPS", len(inputs))
    whole = stabilise(inputs, restored, 0.8)
    parts = []
    cut = stabilise_module._stabilise_part
    monkeypatch.setattr(stabilise_module, "_stabilise_part", lambda *args: parts.append(args[-1]) or cut(*args))
    monkeypatch.setattr(crop_flow, "PART_CROPS", 3)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(5)
    try:
        steady = stabilise(inputs, restored, 0.8)
    finally:
        cv2.setNumThreads(threads)
    assert len(parts) == 5 and [k for part in parts for k in part] == list(range(len(inputs)))
    assert all(np.array_equal(a, b) for a, b in zip(steady, whole, strict=True))


def _bilinear(image, maps):
    """image (H, W, C) sampled at maps' (x, y), clamped at the borders: cv2.remap's INTER_LINEAR with
    BORDER_REPLICATE, written out in float64."""
    h, w = image.shape[:2]
    x, y = np.clip(maps[..., 0].astype(np.float64), 0, w - 1), np.clip(maps[..., 1].astype(np.float64), 0, h - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), w - 2), np.minimum(np.floor(y).astype(int), h - 2)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    return ((1 - fy) * ((1 - fx) * image[y0, x0] + fx * image[y0, x0 + 1])
            + fy * ((1 - fx) * image[y0 + 1, x0] + fx * image[y0 + 1, x0 + 1]))


def test_each_neighbour_counts_strength_to_the_k_times_its_chained_confidence():
    """Against a slow reference that follows every neighbour's chain from scratch: neighbour t - k*step is
    moved link by link onto t, its weight moved with it and multiplied by each link's confidence, then
    by strength^k; the result is the weighted mean with the crop's own restoration (weight 1). The links
    (maps, confidences) are _Links' own: this checks how they are chained and weighed (what they are is
    the occluder test's). float32 against float64: about 6e-5 apart."""
    n, strength = RADIUS + 2, 0.7  # the end crops have one neighbour more than RADIUS away
    inputs = _moving(n, size=96, speed=1.3)
    inputs[2] = inputs[2].copy()
    inputs[2][30:60, 20:50] = 20.0  # confidences well below 1 around an occluder
    rng = np.random.default_rng(7)
    restored = [x + rng.normal(0, 6, x.shape).astype(np.float32) for x in inputs]
    links = _Links(inputs, 1.0)  # weights of strength 1: the confidences themselves
    expected = []
    for t in range(n):
        num, den = restored[t].astype(np.float64), np.ones(restored[t].shape[:2] + (1,))
        for step in (1, -1):
            for k in range(1, RADIUS + 1):
                if not 0 <= t - k * step < n:
                    break
                image, weight = restored[t - k * step].astype(np.float64), np.ones_like(den)
                for dst in range(t - (k - 1) * step, t + step, step):
                    maps, confidence = links.pull(dst, dst - step)
                    image, weight = _bilinear(image, maps), _bilinear(weight, maps) * confidence[..., None]
                num, den = num + strength ** k * weight * image, den + strength ** k * weight
        expected.append(num / den)
    steady = stabilise(inputs, restored, strength)
    assert all(s.dtype == np.float32 and s.shape == r.shape for s, r in zip(steady, restored))
    assert max(float(np.abs(s - e).max()) for s, e in zip(steady, expected)) < 1e-3
