"""The `fusion` restorer: multi-frame fusion along a track, with no weights and nothing invented.

Per ordered run of one track's crops (any crop size: the caller crops each face near its own
resolution, see process.crop_geometry):
1. every crop's 2r nearest crops are flow-aligned to it (crop_flow.RunFlows: DIS between neighbouring
   crops, the chain composed for the others, each flow computed once for the whole run);
2. the aligned stack is averaged with per-pixel weights that drop where a neighbour disagrees with the
   crop itself by more than the noise, the edge's slope and the window's own fine jitter from frame to
   frame there explain (occlusion, blinks) or where the flow fails its forward-backward check, so outliers
   are rejected instead of smeared in, and aliasing that differs in every frame is averaged out. The crop
   itself, not the window's median, is what a neighbour must match: a blink or a word lasting three
   frames of the fifteen is this crop's content, not an outlier (against the median it was averaged away
   on real clips);
3. the average, now much less noisy, is Wiener-deconvolved: the blur's width is *estimated* from the
   run's own edges, relative to how much the crop enlarged its source (the caller's `scale`), its shape
   is the configured transfer exp(-(f / f0) ** exponent) (2, a Gaussian, unless the footage is known to
   be upscaled), and the signal and noise spectra come from its own frames, so a sharp clip gets only
   the noise the averaging left removed, and a blurred one what its blur calls for. Each crop's filter
   comes from its own window, so a result never depends on where a call began.

Only this track's own pixels are used, which is why archivists can choose it.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import scipy.fft
import torch

from ..crop_flow import RunFlows, run_parts
from .base import TrackRefs, check_crops, tensor_to_crops

# 15 frames per window. With the flows chained from neighbouring pairs (crop_flow), a longer window costs
# pulls and weights, not matches: 7 against 5 took 1.2-1.3x the CPU per crop and raised the gain over the
# baseline on every one of 40 dev clips (5 photos in no grid x 4 sizes x chain, down3: mean +0.48 ->
# +0.63 dB, worst -0.11 -> +0.13) and on every tune clip (+1.56 -> +1.68); the agreement test keeps what
# changes within the window (blinks, words) out of the average, as it did at 11 (benchmarks/README.md,
# issue 10, stop 18)
TEMPORAL_RADIUS = 7
FB_TOLERANCE = 1.0  # px at flow size; forward-backward mismatch at which a neighbour's weight is exp(-1/2)
AGREEMENT = 3.0  # a neighbour's weight is exp(-d^2 / 2 (AGREEMENT * noise)^2), d its blurred distance to the crop
AGREEMENT_BLUR = 1.0  # px; distance measured on lightly blurred images so the noise itself does not count
# px at flow size: across an edge, a neighbour's distance grows with the edge's slope times what the flow
# and the sampling leave misaligned, which is not disagreement (on aliased clips it rejected the very
# neighbours that average the aliasing out)
EDGE_SLACK = 0.5
# The agreement scale is also at least the window's own fine-scale jitter from frame to frame at each pixel
# (roughness): where a sampled-down source aliases, or fine detail lands on the frame's grid a little
# differently in every frame, each crop differs from all its neighbours by more than the noise, and judged
# on the noise alone the neighbours were rejected there and the crop's own aliasing kept, which flickered
# (stop 22). A change that holds over frames (a blink) or changes smoothly (an opening mouth, a ramp) has
# no second difference in time, and one spread over an area (a mouth) little detail finer than
# ROUGH_SCALE, so it is still the crop's own content.
ROUGH_SCALE = 2.0  # px at flow size
ROUGH_STEP = 2  # px at flow size; jitter is measured on every other pixel each way and interpolated
# Blur estimate: edge gradients before/after a known re-blur (Zhuo & Sim 2011), in crop pixels. A crop
# enlarges its face `scale` times (process.crop_geometry), so a sharp source's edges read as wide as the
# measurement's own floor and the source's edge width enlarged: on the tuning photos' sharp ground truth,
# 1.3 crop px at scale 1.2 and 1.5-1.7 at scale 2, i.e. hypot(MEASURE_FLOOR, SOURCE_EDGE * scale). Only
# what is wider than that is blur to undo; SHRINK keeps the estimate on the safe side (too wide a PSF
# rings). Compression and plain noise read as a little blur and undoing it loses detail, so estimates
# below PSF_RAMP[0] source px deconvolve nothing, and between the two ends the PSF grows continuously to
# the estimate: a frame whose estimate moves a little never switches deconvolution on or off (that would
# flicker on real footage).
REBLUR_SIGMA = 1.0
EDGE_PERCENTILE = 97.0
# Where the edges are read follows how many source pixels the crop spans. A large face resolves its hair,
# beard and clothes into fine texture whose thin strands read sharper than the blur is: over the whole
# crop, 3 of 10 clips of dev photos in no grid at 280 px (~510 source px across the crop) lost to the
# baseline (obama2 down3 -0.98 dB, biden1 down3 -0.21); read in the crop's middle 60% (the face), 1 did
# (-0.14, a 99 px photo face enlarged 2.8x), and the mean over the baseline rose by 0.36 dB. A small face's
# strongest step edges are its outline against the background, and at 96 px (~170 source px) the middle
# alone lost 0.09 dB on average; at 160 px (~280) the two were even. So the margin left out grows from 0
# to INNER_MARGIN of the crop's side between the ends of INNER_RAMP, continuously (no switch as a face
# grows). scratch /work/exp/dev_region.py, 5 dev photos x 4 sizes x chain, down3.
INNER_MARGIN = 0.2
INNER_RAMP = (256.0, 512.0)  # source px across the crop
MEASURE_FLOOR = 1.0  # crop px
SOURCE_EDGE = 0.75  # source px
SHRINK = 0.85
PSF_RAMP = (0.5, 1.0)  # source px
MAX_PSF = 4.0  # px; never deconvolve wider than this, whatever the estimate
MAX_GAIN = 3.0  # the deconvolution amplifies no frequency more than this
GAUSSIAN = 2.0  # the blur transfer's exponent for a Gaussian PSF (restore.blur_exponent's default)
SPECTRUM_BINS = 48  # radial frequency bins of a crop's power spectra
EPS = 1e-6


# luma and two colour differences: linear and exactly invertible (rows applied to RGB by cv2.transform)
_YUV = np.array([[0.299, 0.587, 0.114], [-0.299, -0.587, 0.886], [0.701, -0.587, -0.114]], np.float32)
_RGB = np.linalg.inv(_YUV.astype(np.float64)).astype(np.float32)


def _to_yuv(rgb: np.ndarray) -> np.ndarray:
    """float RGB (N, H, W, 3) -> luma and its two colour differences per pixel, (N, H, W, 3)."""
    out = np.empty(rgb.shape, np.float32)
    for image, converted in zip(rgb, out):
        cv2.transform(image, _YUV, dst=converted)
    return out


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT101)


class PairFlows:
    """Crops of a run pulled onto each other along crop_flow.RunFlows, at flow size (about the frame's
    own resolution), where the weights are decided too: only the luma that is averaged is pulled at full
    size."""

    def __init__(self, crops: np.ndarray, yuv: np.ndarray):
        self.flows = RunFlows(crops)
        self.size, self.flow_size = self.flows.size, self.flows.flow_size
        small = self.flow_size
        self.small = [cv2.resize(c, (small, small), interpolation=cv2.INTER_AREA) for c in yuv]
        self.lumas = [np.ascontiguousarray(c[..., 0]) for c in yuv]

    def pull_small(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Crop j at flow size (yuv) warped onto crop i, and the forward-backward confidence (0..1)."""
        maps, mismatch = self.flows.checked_map(i, j)
        pulled = cv2.remap(self.small[j], maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return pulled, np.exp(-0.5 * mismatch / FB_TOLERANCE ** 2)

    def pull_luma(self, i: int, j: int) -> np.ndarray:
        """Crop j's full-size luma warped onto crop i. Bilinear: crops are enlarged from the frame, so there
        is little above half their Nyquist frequency for a cubic kernel to keep (the tune clips: 0.05 dB
        less than cubic on average, a little less flicker, at 0.43 of the remap's time)."""
        return cv2.remap(self.lumas[j], self.flows.crop_map(i, j), None, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)


def window(i: int, n: int, radius: int) -> range:
    """The 2r+1 crops around i: centred, shifted inward at a run's ends (every crop gets 2r neighbours)."""
    lo = max(0, min(i - radius, n - 1 - 2 * radius))
    return range(lo, min(n, lo + 2 * radius + 1))


def fuse(yuv: np.ndarray, flows: PairFlows, i: int, span: range) -> tuple[np.ndarray, float]:
    """Crop i fused with the crops of its window `span`: (yuv, effective number of crops averaged).
    Weights and colour are decided at flow size; the luma is averaged at full size with the weights
    upsampled."""
    others = [j for j in span if j != i]
    if not others:
        return yuv[i], 1.0
    small = flows.flow_size
    stack = np.empty((len(others) + 1, small, small, 3), np.float32)
    conf_arr = np.empty((len(others) + 1, small, small), np.float32)
    stack[0], conf_arr[0] = flows.small[i], 1.0
    for k, j in enumerate(others, 1):
        stack[k], conf_arr[k] = flows.pull_small(i, j)
    luma_small = stack[..., 0]
    reference = luma_small[0]
    blur = AGREEMENT_BLUR * flows.flow_size / flows.size
    dist = np.zeros_like(luma_small)  # blurred differences to the crop (its own: 0); then their magnitudes
    for k in range(1, len(luma_small)):
        dist[k] = _blur(luma_small[k] - reference, blur)
    rough = roughness(dist, np.argsort([i, *others]))
    np.abs(dist, out=dist)
    # noise of the blurred distance, robustly, from the neighbours' pixels the flow trusts (every other
    # pixel each way is plenty for a median); a floor keeps a clean static window from rejecting every
    # neighbour
    noise = max(1.4826 * float(np.median(dist[1:, ::2, ::2][conf_arr[1:, ::2, ::2] > 0.5])), 0.5)
    smooth = _blur(reference, blur)
    slope = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)) / 8.0  # levels a px
    tau = AGREEMENT * np.sqrt(np.maximum(noise, rough) ** 2 + (EDGE_SLACK * slope) ** 2)
    # weight conf * exp(-d^2 / 2 tau^2), neighbour by neighbour in place: whole-stack numpy temporaries
    # cost more than the arithmetic (the crop itself keeps conf 1 and distance 0: it always counts fully)
    weights, gain = conf_arr, np.float32(-0.5) / np.square(tau)
    for d, w in zip(dist[1:], weights[1:]):
        cv2.multiply(w, cv2.exp(cv2.multiply(cv2.multiply(d, d, dst=d), gain, dst=d), dst=d), dst=w)
    wsum, squares = np.zeros_like(reference), np.zeros_like(reference)
    # colour has little fine detail (video stores it at half size too): fused small, upsampled. Summed by
    # OpenCV on all three channels in place: numpy's products on the strided colour channels cost more
    summed, spread = np.zeros_like(stack[0]), np.empty_like(stack[0])
    for w, pulled in zip(weights, stack):
        cv2.accumulate(w, wsum)
        cv2.accumulateSquare(w, squares)
        cv2.accumulateProduct(pulled, cv2.cvtColor(w, cv2.COLOR_GRAY2BGR, spread), summed)
    effective = float(np.mean(wsum ** 2 / np.maximum(squares, EPS)))
    size = flows.size
    out = np.empty_like(yuv[i])
    out[..., 1:] = flows.flows.resized(summed[..., 1:] / wsum[..., None])
    luma, total = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    for w, j in zip(weights, [i, *others]):
        w = flows.flows.resized(w)
        cv2.accumulateProduct(w, flows.lumas[i] if j == i else flows.pull_luma(i, j), luma)
        cv2.accumulate(w, total)
    out[..., 0] = luma / np.maximum(total, EPS)
    return out, effective


def roughness(differences: np.ndarray, timeline: np.ndarray) -> np.ndarray:
    """Per pixel (flow size, float32): how much the window's crops jitter from one frame to the next at fine
    scale, in grey levels (0 for fewer than three crops). `differences` are the crops' blurred differences to
    the crop being fused, `timeline` the indices that put them in time order. Their detail finer than ROUGH_SCALE goes through
    second differences in time, which a steady or smoothly changing pixel leaves at 0, and the robust spread
    of those (MAD, / sqrt(6): independent noise in every frame reads its own sigma, less the little of it
    coarser than ROUGH_SCALE) is the jitter. Measured on every ROUGH_STEP-th pixel each way and interpolated."""
    if len(differences) < 3:
        return np.zeros(differences.shape[1:], np.float32)
    fine = differences[timeline, ::ROUGH_STEP, ::ROUGH_STEP]  # a new array
    for d in fine:
        d -= _blur(d, ROUGH_SCALE / ROUGH_STEP)
    second = fine[2:] - 2 * fine[1:-1] + fine[:-2]
    jitter = (np.median(np.abs(second), axis=0) * np.float32(1.4826 / np.sqrt(6.0))).astype(np.float32)
    return cv2.resize(jitter, differences.shape[2:0:-1], interpolation=cv2.INTER_LINEAR)


def estimate_psf_sigma(luma: np.ndarray, scale: float) -> float:
    """Gaussian blur (crop px) to undo in a fused luma whose crop enlarges the source `scale` times, from
    its strongest edges (over less of the crop's border the more source pixels it spans), beyond a sharp
    source's own (0 for a sharp image)."""
    g = _blur(luma, 0.5)
    r = _blur(g, REBLUR_SIGMA)
    size = luma.shape[0]
    near, far = INNER_RAMP
    margin = round(size * INNER_MARGIN * float(np.clip((size / scale - near) / (far - near), 0.0, 1.0)))
    region = (slice(margin, size - margin),) * 2
    m1, m2 = (np.hypot(cv2.Sobel(img, cv2.CV_32F, 1, 0)[region], cv2.Sobel(img, cv2.CV_32F, 0, 1)[region])
              for img in (g, r))
    edges = m1 > np.percentile(m1, EDGE_PERCENTILE)
    ratio = np.clip(m1[edges] / np.maximum(m2[edges], EPS), 1.01, None)
    measured = float(np.median(REBLUR_SIGMA / np.sqrt(ratio ** 2 - 1)))
    intrinsic = np.hypot(MEASURE_FLOOR, SOURCE_EDGE * scale)
    sigma = min(SHRINK * np.sqrt(max(measured ** 2 - intrinsic ** 2, 0.0)), MAX_PSF)
    lo, hi = (end * scale for end in PSF_RAMP)
    return float(sigma * np.clip((sigma - lo) / (hi - lo), 0.0, 1.0))


@functools.lru_cache(maxsize=16)
def _rings(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the rfft grid of an n x n image: each bin's squared radial frequency, its ring index
    (SPECTRUM_BINS rings out to the corner) and the number of bins in each ring (the same for every crop
    of a size: computed once)."""
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]
    radius2 = fx ** 2 + fy ** 2
    rings = np.minimum((np.sqrt(radius2 / radius2.max()) * SPECTRUM_BINS).astype(np.intp), SPECTRUM_BINS - 1).ravel()
    return radius2.astype(np.float32), rings, np.maximum(np.bincount(rings, minlength=SPECTRUM_BINS), 1)


@functools.lru_cache(maxsize=8)
def _hann(size: int) -> tuple[np.ndarray, float]:
    """The 2-D Hann window of a crop size and its energy (what a power spectrum is divided by)."""
    hann = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    return hann, float(np.square(hann).sum())


class WienerFilter:
    """Wiener deconvolution of one fused crop: a blur whose transfer is exp(-(2 pi^2 sigma^2 f^2) **
    (exponent / 2)) (a Gaussian PSF of width sigma for exponent 2; steeper ones keep more below the
    frequency where it reaches 1/e, the same for all, and less above it), and the crop's own signal and
    noise power spectra (radially averaged), so frequencies the noise dominates are not amplified."""

    def __init__(self, fused: np.ndarray, noise: np.ndarray, sigma: float, exponent: float = GAUSSIAN):
        size = fused.shape[0]
        # the spectra on the crop's own grid (padding would only interpolate them); the filter on the grid
        # of the crop reflect-padded by a quarter of its side, which keeps the ringing of a periodic
        # filter off the crop
        self.pad = size // 4
        signal, noise_power = (_radial_power(img) for img in (fused, noise))
        clean = np.maximum(signal - noise_power, EPS)
        wiener = (clean / (clean + noise_power)).astype(np.float32)  # per ring
        radius2, rings, _ = _rings(size + 2 * self.pad)
        # 1 / the blur's transfer function; capped where it would overflow (the gain is capped anyway)
        attenuation = np.float32(2 * np.pi ** 2 * sigma ** 2) * radius2
        attenuation **= np.float32(exponent / 2)  # a power of 1 (the Gaussian) leaves it exactly as it is
        inverse_otf = np.exp(np.minimum(attenuation, 80.0))
        self.filter = np.minimum(wiener[rings].reshape(radius2.shape) * inverse_otf, MAX_GAIN)
        self.filter[0, 0] = 1.0

    def __call__(self, img: np.ndarray) -> np.ndarray:
        p = self.pad
        padded = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REFLECT101)
        out = scipy.fft.irfft2(scipy.fft.rfft2(padded) * self.filter, s=padded.shape)
        return out[p:-p, p:-p].astype(np.float32)


def _radial_power(img: np.ndarray) -> np.ndarray:
    """Power spectrum of the Hann-windowed image, averaged over each ring."""
    hann, energy = _hann(img.shape[0])
    _, rings, counts = _rings(img.shape[0])
    spectrum = scipy.fft.rfft2((img - img.mean()) * hann)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    return np.bincount(rings, power.ravel(), SPECTRUM_BINS) / counts / energy


def restore_run(images: np.ndarray, scale: float, radius: int = TEMPORAL_RADIUS,
                exponent: float = GAUSSIAN) -> np.ndarray:
    """Fused and deconvolved RGB crops (float32 0..255) of one ordered run (N, S, S, 3) whose crops enlarge
    their source `scale` times, deconvolved with the blur transfer `exponent` (WienerFilter).

    Each crop's Wiener filter is estimated from that crop's own window (its fused luma and what fusion
    removed from it), so a crop's result depends only on its window, never on where a call began: the
    run is cut into consecutive parts restored side by side on OpenCV's threads (the cores this process
    was given), each part with the windows it needs, for the same numbers as one part.
    """
    images = np.asarray(images, np.float32)
    out = np.empty(images.shape, np.float32)
    parts = run_parts(len(images))
    restore_part = functools.partial(_restore_part, images, out, scale=scale, radius=radius, exponent=exponent)
    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="fusion") as pool:
        list(pool.map(restore_part, parts))
    return out


def _restore_part(images: np.ndarray, out: np.ndarray, part: range, *, scale: float, radius: int,
                  exponent: float) -> None:
    """Fill out[part] (RGB, 0..255) from the crops the part's windows reach, flowed and converted to yuv on
    their own (the colour conversions too run on the part's thread)."""
    n = len(images)
    first = window(part.start, n, radius).start
    last = window(part.stop - 1, n, radius).stop
    yuv = _to_yuv(images[first:last])
    flows = PairFlows(images[first:last], yuv)
    for i in part:
        span = window(i, n, radius)
        flows.flows.forget_before(span.start - first)
        fused, averaged = fuse(yuv, flows, i - first, range(span.start - first, span.stop - first))
        if averaged > 1.0:
            luma = fused[..., 0]
            # the noise left after averaging: what fusion removed, divided by the crops averaged
            noise = (yuv[i - first, ..., 0] - luma) / np.sqrt(averaged)
            fused[..., 0] = WienerFilter(luma, noise, estimate_psf_sigma(luma, scale), exponent)(luma)
        cv2.transform(fused, _RGB, dst=out[i])
        np.clip(out[i], 0, 255, out=out[i])


class FusionRestorer:
    """Restorer protocol; needs ordered runs of one track (temporal_radius neighbours on each side).
    Takes crops of any size (crop_size None): each face is fused near its own resolution, and `scale`
    says how many crop pixels one source pixel became (1: the source's own pixels)."""

    name = "fusion"
    temporal_radius = TEMPORAL_RADIUS
    crop_size = None
    keeps_colour = True  # its colour is the track's own, averaged

    def __init__(self, restore_cfg=None):
        self.cfg = restore_cfg
        self.exponent = restore_cfg.blur_exponent if restore_cfg is not None else GAUSSIAN

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None, scale: float = 1.0) -> torch.Tensor:
        check_crops(crops, self.crop_size)
        out = restore_run(tensor_to_crops(crops), scale, self.temporal_radius, self.exponent)
        # scaled in place: a float64 quotient and its float32 copy were two more stacks of fresh memory
        np.divide(out, np.float32(255), out=out)
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(crops.dtype).to(crops.device)
