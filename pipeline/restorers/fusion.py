"""The `fusion` restorer: multi-frame fusion along a track, with no weights and nothing invented.

For each crop, with its 2r nearest crops of the same track (centred; shifted inward at a run's ends):
1. the neighbours are flow-aligned to it (OpenCV DIS optical flow on grey images at FLOW_SIZE) and
   averaged with per-pixel weights that drop where a warped neighbour disagrees with the centre
   (occlusion, blinks, flow failure), so outliers are rejected rather than smeared in; luma is fused at
   512, colour at 256 (it carries little fine detail);
2. the average, now much less noisy, is deblurred by Richardson-Lucy iterations with a small Gaussian
   PSF (the blur every capture and compression chain adds);
3. detail is transferred from the track's references where, after flow alignment, they agree with the
   result at low frequencies and are locally sharper than the input crop: real detail of this person,
   seen in another frame, never synthesised.

Nothing is synthesised: the output is this track's own aligned pixels, averaged and deblurred, plus
detail seen in its own references, which is why archivists can choose it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import CROP_SIZE, TrackRefs, check_crops, tensor_to_crops

TEMPORAL_RADIUS = 7  # 15 frames per window (11 frames: about 0.35 dB less on the generated clips)
FLOW_SIZE = 256  # flow on half-size grey crops: 4x cheaper, the same alignment on upscaled faces
AGREEMENT_BLUR = 2.0  # px; disagreement is measured on blurred images so noise does not count
OUTLIER_SCALE = 10.0  # weight = exp(-d / (OUTLIER_SCALE * median d)): typical pixels ~0.9, outliers ~0
DEBLUR_SIGMA = 1.9  # px (crop space); Gaussian PSF of Richardson-Lucy (best of 1.2-2.3 on generated clips)
DEBLUR_ITERATIONS = 15
DETAIL_SIGMA = 2.0  # px; the band transferred from references: image minus its Gaussian blur
REF_AGREEMENT_SIGMA = 4.0  # px; references must match the result at this scale to give detail
REF_TOLERANCE = 6.0  # grey levels; RMS low-frequency difference accepted as agreement
REF_LIMIT = 3  # references used per crop (the first ones: user photos, then the best-scored frames)
REF_SHARPER = 1.5  # a reference gives detail where its fine-band energy exceeds the input's by this factor
EPS = 1e-6


def _to_yuv(rgb: np.ndarray) -> np.ndarray:
    """float RGB (..., 3) -> luma and two colour differences (exactly invertible, linear)."""
    y = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.stack([y, rgb[..., 2] - y, rgb[..., 0] - y], -1)


def _to_rgb(yuv: np.ndarray) -> np.ndarray:
    y, u, v = yuv[..., 0], yuv[..., 1], yuv[..., 2]
    r, b = v + y, u + y
    return np.stack([r, (y - 0.299 * r - 0.114 * b) / 0.587, b], -1)


def _small(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (FLOW_SIZE, FLOW_SIZE), interpolation=cv2.INTER_AREA)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT101)


class _Crop:
    """One crop prepared for fusion: full-size luma, half-size chroma and luma, the flow's grey image."""

    def __init__(self, rgb: np.ndarray):
        yuv = _to_yuv(rgb)
        self.luma = np.ascontiguousarray(yuv[..., 0])
        self.chroma = _small(yuv[..., 1:])  # colour is smooth: fused at half size
        self.chroma_full = yuv[..., 1:]
        self.luma_small = _small(self.luma)
        self.grey = np.clip(self.luma_small, 0, 255).astype(np.uint8)


class _Aligner:
    """Dense flow between crops (DIS at FLOW_SIZE) and the warps that pull one crop onto another."""

    def __init__(self) -> None:
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        full = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float32)
        small = np.mgrid[0:FLOW_SIZE, 0:FLOW_SIZE].astype(np.float32)
        self.full = (full[1], full[0])
        self.small = (small[1], small[0])

    def pull(self, target: _Crop, source: _Crop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`source` warped onto `target`: (luma 512, luma 256, chroma 256)."""
        flow = self.dis.calc(target.grey, source.grey, None)
        sx, sy = self.small[0] + flow[..., 0], self.small[1] + flow[..., 1]
        flow_full = cv2.resize(flow, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR) * (CROP_SIZE / FLOW_SIZE)
        fx, fy = self.full[0] + flow_full[..., 0], self.full[1] + flow_full[..., 1]
        luma = cv2.remap(source.luma, fx, fy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        luma_small = cv2.remap(source.luma_small, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        chroma = cv2.remap(source.chroma, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return luma, luma_small, chroma


def temporal_fuse(center: _Crop, warped: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Outlier-rejecting weighted mean of the centre and its aligned neighbours: (luma 512, chroma 256)."""
    if not warped:
        return center.luma, center.chroma
    center_low = _blur(center.luma_small, AGREEMENT_BLUR / 2)
    dists = [(_blur(w[1], AGREEMENT_BLUR / 2) - center_low) ** 2 for w in warped]
    # The scale comes from all neighbours together: noise sets the typical distance, outliers are far
    # above it; the floor keeps near-identical (static) windows from rejecting everything.
    scale = OUTLIER_SCALE * max(float(np.median(np.stack(dists))), 1.0)
    luma, chroma = center.luma.copy(), center.chroma.copy()
    wsum = np.ones((FLOW_SIZE, FLOW_SIZE), np.float32)
    weights_full = []
    for (_, _, w_chroma), d in zip(warped, dists):
        weight = np.exp(-d / scale)
        chroma += weight[..., None] * w_chroma
        wsum += weight
        weights_full.append(cv2.resize(weight, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR))
    wsum_full = 1.0 + sum(weights_full)
    for (w_luma, _, _), weight in zip(warped, weights_full):
        luma += weight * w_luma
    return luma / wsum_full, chroma / wsum[..., None]


def deblur(img: np.ndarray, sigma: float, iterations: int) -> np.ndarray:
    """Richardson-Lucy deconvolution with a Gaussian PSF (float32 0..255 in, same out)."""
    observed = np.maximum(img, 1.0)
    estimate = observed.copy()
    for _ in range(iterations):
        ratio = observed / np.maximum(_blur(estimate, sigma), 1.0)
        estimate *= _blur(ratio, sigma)
    return np.clip(estimate, 0.0, 255.0)


def _detail(img: np.ndarray) -> np.ndarray:
    return img - _blur(img, DETAIL_SIGMA)


def transfer_detail(result: np.ndarray, input_luma: np.ndarray, aligned_refs: list[np.ndarray]) -> np.ndarray:
    """Replace the result's fine luma band by the references' where they agree and are sharper.

    The sharpness test is against the *input* crop (same noise as a reference frame of this video), so
    references that are only as sharp as the input, noise included, give nothing.
    """
    if not aligned_refs:
        return result
    result_low = _blur(result, REF_AGREEMENT_SIGMA)
    result_detail = _detail(result)
    input_energy = _blur(_detail(input_luma) ** 2, REF_AGREEMENT_SIGMA)
    num = np.zeros_like(result)
    den = np.zeros_like(result)
    for ref in aligned_refs:
        agree = np.exp(-(_blur(ref, REF_AGREEMENT_SIGMA) - result_low) ** 2 / (2 * REF_TOLERANCE ** 2))
        ref_detail = _detail(ref)
        ref_energy = _blur(ref_detail ** 2, REF_AGREEMENT_SIGMA)
        weight = agree * np.clip(1.0 - REF_SHARPER * input_energy / (ref_energy + EPS), 0.0, 1.0)
        num += weight * ref_detail
        den += weight
    gain = np.clip(den, 0.0, 1.0)
    return result + gain * (num / np.maximum(den, EPS) - result_detail)


def fuse_window(center: _Crop, neighbours: list[_Crop], refs: list[_Crop], aligner: _Aligner) -> np.ndarray:
    """The restored RGB crop (float32 0..255) of `center` from its window and the track's references."""
    luma, chroma = temporal_fuse(center, [aligner.pull(center, n) for n in neighbours])
    luma = deblur(luma, DEBLUR_SIGMA, DEBLUR_ITERATIONS)
    if refs:
        result = _Crop(np.repeat(luma[..., None], 3, -1))
        luma = transfer_detail(luma, center.luma, [aligner.pull(result, r)[0] for r in refs])
    # Chroma was fused at half size; colour has little fine detail (video stores it at half size too).
    chroma_full = cv2.resize(chroma, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    return np.clip(_to_rgb(np.concatenate([luma[..., None], chroma_full], -1)), 0, 255)


class FusionRestorer:
    """Restorer protocol; needs ordered runs of one track (temporal_radius neighbours on each side)."""

    name = "fusion"
    temporal_radius = TEMPORAL_RADIUS

    def __init__(self, restore_cfg=None):
        self.cfg = restore_cfg
        self.aligner = _Aligner()

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None) -> torch.Tensor:
        check_crops(crops)
        images = tensor_to_crops(crops)
        prepared = [_Crop(img) for img in images]
        ref_cache: dict[int, list[_Crop]] = {}
        out = np.empty_like(images)
        r = self.temporal_radius
        for i, center in enumerate(prepared):
            # 2r neighbours: centred, or shifted inward at the ends of the run (a track's first and last
            # frames get as many neighbours as the middle ones)
            lo = max(0, min(i - r, len(prepared) - 1 - 2 * r))
            neighbours = [prepared[j] for j in range(lo, min(len(prepared), lo + 2 * r + 1)) if j != i]
            track_refs = refs[i] if refs is not None else None
            out[i] = fuse_window(center, neighbours, self._refs(track_refs, ref_cache), self.aligner)
        restored = torch.from_numpy(out / 255.0).permute(0, 3, 1, 2).to(crops.dtype)
        return restored.to(crops.device)

    @staticmethod
    def _refs(track_refs: TrackRefs | None, cache: dict) -> list[_Crop]:
        if track_refs is None or len(track_refs.crops) == 0:
            return []
        key = id(track_refs)
        if key not in cache:
            crops = track_refs.crops[:REF_LIMIT].detach().to("cpu", torch.float32).clamp(0, 1)
            cache[key] = [_Crop(img) for img in (crops * 255).permute(0, 2, 3, 1).numpy()]
        return cache[key]
