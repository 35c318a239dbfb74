"""Face alignment: 5-point similarity to the 512 FFHQ template, warps in and out, soft paste masks.

Every face crop in the pipeline is the 512x512 FFHQ alignment of a face; everything a restorer does
happens in that space and comes back to the frame through the inverse of the same transform.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

CROP_SIZE = 512
LUMA_MARGIN = 5  # source px around a crop's footprint its luma is recut from: Lanczos' 4 taps and the cubic's

# FFHQ alignment at 512 (left eye, right eye, nose, left mouth, right mouth), as used by the
# GFPGAN/CodeFormer family: restorers trained on FFHQ expect faces exactly here.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)


def template(size: int = CROP_SIZE, zoom: float = 1.0) -> np.ndarray:
    """The 5-point template in a crop of `size` pixels that shows `zoom` times the FFHQ framing."""
    return to_crop(FFHQ_TEMPLATE_512, size, zoom)


def to_crop(points_512: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
    """Points of the 512 FFHQ crop, in a crop of `size` showing `zoom` times as much around the face."""
    centre = size / 2.0
    return ((np.asarray(points_512, np.float32) * (size / CROP_SIZE) - centre) / zoom + centre).astype(np.float32)


def crop_transforms(transforms: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
    """512-template transforms (N,2,3) re-targeted to a crop of `size` that shows `zoom` times as much
    around the face (zoom 1: the FFHQ framing restorers trained on FFHQ expect)."""
    m = np.asarray(transforms, np.float32) * np.float32(size / CROP_SIZE / zoom)
    m[:, :, 2] += np.float32(size / 2.0 * (1.0 - 1.0 / zoom))
    return m


def estimate_transforms(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Least-squares similarity transforms (N,2,3) mapping frame landmarks (N,5,2) onto the template.

    Closed form for x' = a*x - b*y + tx, y' = b*x + a*y + ty over the 5 points, for all faces at once.
    """
    src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    dst = template(size).astype(np.float64)[None]
    src_mean, dst_mean = src.mean(1, keepdims=True), dst.mean(1, keepdims=True)
    p, q = src - src_mean, dst - dst_mean
    norm = np.maximum((p ** 2).sum((1, 2)), 1e-9)
    a = (p * q).sum((1, 2)) / norm
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(1) / norm
    rot = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], 1)  # (N,2,2)
    t = dst_mean[:, 0] - np.einsum("nij,nj->ni", rot, src_mean[:, 0])
    return np.concatenate([rot, t[..., None]], 2).astype(np.float32)


def invert_transforms(transforms: np.ndarray) -> np.ndarray:
    """Inverses of (N,2,3) affine transforms (crop -> frame)."""
    m = np.asarray(transforms, dtype=np.float64)
    lin_inv = np.linalg.inv(m[:, :, :2])
    t_inv = -np.einsum("nij,nj->ni", lin_inv, m[:, :, 2])
    return np.concatenate([lin_inv, t_inv[..., None]], 2).astype(np.float32)


def transform_points(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (N,2,3) transforms to (N,P,2) points."""
    m = np.asarray(transforms, dtype=np.float32)
    return np.einsum("nij,npj->npi", m[:, :, :2], points) + m[:, None, :, 2]


def compose(transforms: np.ndarray, grid_to_display: np.ndarray) -> np.ndarray:
    """Display->crop transforms (N,2,3) after a grid->display map (2,3): grid->crop transforms (float64).

    Pictures whose grid is not display space (anamorphic, rotated, one field) are warped into and out of
    crops by these, so each direction resamples once."""
    m = np.asarray(transforms, np.float64)
    g = np.asarray(grid_to_display, np.float64)
    lin = m[:, :, :2] @ g[:, :2]
    t = m[:, :, :2] @ g[:, 2] + m[:, :, 2]
    return np.concatenate([lin, t[..., None]], 2)


def shift_origin(transform: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """The same (2,3) transform for an image that starts at grid pixel (x0, y0)."""
    m = np.asarray(transform, np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return m


def crop_box(transform: np.ndarray, size: int, shape: tuple[int, int], margin: int = 0
             ) -> tuple[int, int, int, int] | None:
    """Grid pixels (x0, y0, x1, y1) a crop of `size` covers (its corners mapped back, grown by
    `margin`), clipped to the grid; None when it is all outside."""
    corners = np.array([[[0, 0], [size, 0], [0, size], [size, size]]], np.float64)
    pts = transform_points(invert_transforms(np.asarray(transform, np.float64)[None]), corners)[0]
    h, w = shape
    x0, y0 = np.floor(pts.min(0)).astype(int) - margin
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1 + margin
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def transform_scale(transforms: np.ndarray) -> np.ndarray:
    """Zoom factor (crop pixels per frame pixel) of each similarity transform."""
    m = np.asarray(transforms, dtype=np.float32)
    return np.sqrt(np.abs(np.linalg.det(m[:, :, :2])))


def smooth_transforms(transforms: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of consecutive transforms of one track (N,2,3) over time.

    A similarity transform is linear in its 4 parameters, so a weighted average of the matrices stays a
    similarity. Each value is a Gaussian-weighted local *linear* fit (not a plain mean): steady motion
    passes unchanged, also at the track's ends where the window is one-sided (no lag, no pull inward).
    Used for the crops and paste masks: landmark jitter would otherwise make the mask border shimmer.
    """
    m = np.asarray(transforms, dtype=np.float64)
    n = len(m)
    if sigma <= 0 or n < 3:
        return m.astype(np.float32)
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    flat = m.reshape(n, 6)
    out = np.empty_like(flat)
    for i in range(n):
        idx = i + offsets.astype(int)
        ok = (idx >= 0) & (idx < n)
        w, o, y = kernel[ok], offsets[ok], flat[idx[ok]]
        s0, s1, s2 = w.sum(), (w * o).sum(), (w * o * o).sum()
        t0, t1 = (w[:, None] * y).sum(0), (w[:, None] * o[:, None] * y).sum(0)
        det = s0 * s2 - s1 * s1
        out[i] = (s2 * t0 - s1 * t1) / det if det > 1e-9 else t0 / s0
    return out.reshape(n, 2, 3).astype(np.float32)


def warp_faces(frame_rgb: np.ndarray, transforms: np.ndarray, size: int = CROP_SIZE,
               out: np.ndarray | None = None) -> np.ndarray:
    """Aligned crops (N,size,size,3) of one frame, of its dtype (uint8 or float32), into `out` when given;
    borders reflect so restorers see no black edges. Float crops (the face path's) get their luma from
    `_cut_luma`."""
    crops = np.empty((len(transforms), size, size, 3), frame_rgb.dtype) if out is None else out
    for i, m in enumerate(np.asarray(transforms, dtype=np.float64)):
        # Downscaling into the crop (face larger than the crop) needs area averaging, not point samples.
        if transform_scale(m[None])[0] < 0.7:
            crops[i] = _warp_downscaled(frame_rgb, m, size)
        else:
            cv2.warpAffine(frame_rgb, m, (size, size), crops[i], flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT101)
            if frame_rgb.dtype == np.float32:
                _cut_luma(frame_rgb, m, size, crops[i])
    return crops


def _cut_luma(frame: np.ndarray, m: np.ndarray, size: int, crop: np.ndarray) -> None:
    """Give a float crop the luma cut from the source's luma enlarged 2x by Lanczos' kernel, R, G and B
    moved alike (the colour differences stay the crop's own).

    A cubic kernel's response moves with where a sample falls between source pixels, so a face moving by
    fractions of a pixel shimmers in its crops, and every temporal restorer then has to undo it (a
    band-limited face moved sub-pixel: 0.58x the cubic cut's variation from crop to crop and 0.55x its
    error, tests/test_align.py). Lanczos' own warp costs 7x the cubic one a channel; enlarging 2x samples
    every source pixel at the same two phases, and the cubic warp from there reads the finest detail at a
    quarter of the grid's frequency, where its phase hardly matters.
    """
    box = crop_box(m, size, frame.shape[:2], LUMA_MARGIN)
    if box is None:
        return
    x0, y0, x1, y1 = box
    doubled = _double(cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY))
    # pixel X of the doubled image shows pixel X / 2 - 1/4 of the region (OpenCV's pixel centres)
    half = shift_origin(m, x0 - 0.25, y0 - 0.25)
    half[:, :2] /= 2
    luma = cv2.warpAffine(doubled, half, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    cv2.subtract(luma, cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), dst=luma)
    cv2.add(crop, cv2.merge([luma, luma, luma]), dst=crop)


def _lanczos_taps(shift: float) -> np.ndarray:
    """Correlation taps, centred at index 4, that sample an image `shift` px (-1..1) off its pixels with
    Lanczos' 4-lobe kernel, normalised as OpenCV's."""
    x = np.arange(-4, 5) - shift
    taps = np.where(np.abs(x) < 4, np.sinc(x) * np.sinc(x / 4), 0.0)
    return (taps / taps.sum()).astype(np.float32)


# OpenCV's 2x enlargement puts output pixel 2k at k - 1/4 and 2k + 1 at k + 1/4
_DOUBLING_TAPS = (_lanczos_taps(-0.25), _lanczos_taps(0.25))


def _double(img: np.ndarray) -> np.ndarray:
    """A one-channel float image enlarged 2x with Lanczos' kernel: cv2.resize's INTER_LANCZOS4 numbers
    (away from the border) in a third of its time, as two phases per axis of a separable filter."""
    h, w = img.shape
    wide = np.empty((h, 2 * w), np.float32)
    out = np.empty((2 * h, 2 * w), np.float32)
    for phase, taps in enumerate(_DOUBLING_TAPS):
        wide[:, phase::2] = cv2.filter2D(img, -1, taps[None], borderType=cv2.BORDER_REFLECT101)
    for phase, taps in enumerate(_DOUBLING_TAPS):
        out[phase::2] = cv2.filter2D(wide, -1, taps[:, None], borderType=cv2.BORDER_REFLECT101)
    return out


def _warp_downscaled(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Pre-shrink the frame so the remaining warp is close to 1:1 (no aliasing in the crop)."""
    scale = float(transform_scale(m[None])[0])
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sx, sy = small.shape[1] / frame.shape[1], small.shape[0] / frame.shape[0]
    m2 = m.copy()
    m2[:, 0] /= sx
    m2[:, 1] /= sy
    return cv2.warpAffine(small, m2, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def unwarp(crop: np.ndarray, transform: np.ndarray, frame_shape: tuple[int, int],
           interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp a crop-space image (uint8 or float, any channels) back into frame coordinates."""
    h, w = frame_shape[:2]
    return cv2.warpAffine(crop, np.asarray(transform, np.float32), (w, h),
                          flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@functools.lru_cache(maxsize=16)
def crop_mask(size: int = CROP_SIZE, feather: float = 0.1) -> np.ndarray:
    """Soft face mask in crop space (size,size) float32 in [0,1], read-only (computed once per size: a
    640 px mask's blur took 70-120 ms on a busy machine, and every pasted frame needs one per face size).

    An ellipse nearly inscribed in the crop (hair line, chin and cheeks of the aligned face) with a
    Gaussian edge whose width is `feather` times the crop size; it reaches zero inside the crop, so a
    pasted face never shows the crop's border.
    """
    feather_px = max(feather * size, 1.0)
    # centred a little below the crop centre: the template's chin sits lower than its hair line is high
    axes = (max(int(round(0.46 * size - feather_px)), 8), max(int(round(0.47 * size - feather_px)), 8))
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, int(round(0.52 * size))), axes, 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), feather_px / 3.0)
    mask.flags.writeable = False
    return mask


def paste_mask(transform: np.ndarray, frame_shape: tuple[int, int], feather: float = 0.1,
               size: int = CROP_SIZE) -> np.ndarray:
    """The crop's soft face mask in frame coordinates (H,W) float32 in [0,1]."""
    return unwarp(crop_mask(size, feather), transform, frame_shape)


def mask_box(mask: np.ndarray, threshold: float = 0.0) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of mask > threshold, or None when empty."""
    ys, xs = np.nonzero(mask > threshold)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
