"""How the face path sees a stored frame, and how its changes go back, at the source's precision.

- Colour: native sample planes (any bit depth, YUV or RGB, limited or full range) <-> float RGB in the
  restorers' working space (0..255, SDR, gamma-encoded). PQ and HLG sources are converted to BT.709
  primaries and a 2.4 gamma with reference white (BT.2408: 203 nits, HLG 75 %) at 255, by maps whose
  inverse is exact, so an unchanged face stays unchanged. Changes go back as differences added to the
  decoded samples: a zero change gives the decoded integers back, whatever the depth.
- Geometry: a picture grid (the whole stored frame, or one field of an interlaced frame) -> display
  space (square pixels, upright) is one affine map; faces are detected, aligned and restored in display
  space and every warp into or out of a crop goes through that map (one resampling each way).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ReelfaceError

# AVCOL_SPC_* -> (Kr, Kb); unknown matrices read as BT.601, as swscale does (rgb_conversions in video.py)
_MATRIX_COEFFS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114),
                  7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)

PQ, HLG = 16, 18  # AVCOL_TRC_SMPTE2084, AVCOL_TRC_ARIB_STD_B67
# transfers the restorers cannot take as SDR and that have no conversion here
_UNSUPPORTED_TRANSFERS = {8: "linear", 9: "log100", 10: "log316", 17: "smpte428"}
BT2020_PRIMARIES = 9
HDR_OPTION = "restore.hdr"  # convert (default) | refuse

# Linear-light BT.2020 RGB -> BT.709 RGB (ITU-R BT.2087, from the two sets of primaries, D65)
_BT2020_TO_BT709 = np.array([[1.660491, -0.587641, -0.072850],
                             [-0.124550, 1.132900, -0.008349],
                             [-0.018151, -0.100579, 1.118730]])
_BT709_TO_BT2020 = np.linalg.inv(_BT2020_TO_BT709)
SDR_GAMMA = 2.4  # BT.1886
PQ_REFERENCE_WHITE = 203.0  # nits (BT.2408)
_PQ_M1, _PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
_PQ_C1, _PQ_C2, _PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4 * _HLG_A)


def _pq_to_linear(e: np.ndarray) -> np.ndarray:
    """PQ signal 0..1 -> nits / 10000."""
    p = np.power(np.clip(e, 0, None), 1 / _PQ_M2)
    return np.power(np.clip(p - _PQ_C1, 0, None) / (_PQ_C2 - _PQ_C3 * p), 1 / _PQ_M1)


def _linear_to_pq(y: np.ndarray) -> np.ndarray:
    p = np.power(np.clip(y, 0, None), _PQ_M1)
    return np.power((_PQ_C1 + _PQ_C2 * p) / (1 + _PQ_C3 * p), _PQ_M2)


def _hlg_to_linear(e: np.ndarray) -> np.ndarray:
    """HLG signal 0..1 -> scene light 0..1 (the inverse OETF)."""
    e = np.clip(e, 0, None)
    return np.where(e <= 0.5, e * e / 3, (np.exp((e - _HLG_C) / _HLG_A) + _HLG_B) / 12)


def _linear_to_hlg(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, None)
    return np.where(x <= 1 / 12, np.sqrt(3 * x), _HLG_A * np.log(np.maximum(12 * x - _HLG_B, 1e-12)) + _HLG_C)


_HLG_REFERENCE_WHITE = float(_hlg_to_linear(np.array(0.75)))


def _gamma_encode(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.power(np.abs(x), 1 / SDR_GAMMA)  # odd extension: out-of-gamut stays invertible


def _gamma_decode(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.power(np.abs(v), SDR_GAMMA)


@dataclass(frozen=True)
class Colour:
    """How one pixel format with one set of colour tags maps to the working space, and back."""

    bits: int
    is_rgb: bool
    full_range: bool
    kr: float
    kb: float
    transfer: int  # AVCOL_TRC_*
    bt2020: bool
    rgb_planes: tuple[int, int, int] | None  # plane of R, G, B for planar RGB; None for packed rgb24/YUV

    @property
    def is_hdr(self) -> bool:
        return self.transfer in (PQ, HLG)

    # -- normalised signal <-> working space (0..1 SDR) -------------------------------------------------
    def _to_sdr(self, rgb: np.ndarray) -> np.ndarray:
        if not self.is_hdr:
            return rgb
        if self.transfer == PQ:
            light = _pq_to_linear(rgb) * (10000.0 / PQ_REFERENCE_WHITE)
        else:
            light = _hlg_to_linear(rgb) / _HLG_REFERENCE_WHITE
        if self.bt2020:
            light = light @ _BT2020_TO_BT709.T
        return _gamma_encode(light)

    def _from_sdr(self, sdr: np.ndarray) -> np.ndarray:
        if not self.is_hdr:
            return sdr
        light = _gamma_decode(sdr)
        if self.bt2020:
            light = light @ _BT709_TO_BT2020.T
        if self.transfer == PQ:
            return _linear_to_pq(light * (PQ_REFERENCE_WHITE / 10000.0))
        return _linear_to_hlg(light * _HLG_REFERENCE_WHITE)

    # -- samples <-> normalised signal -------------------------------------------------------------------
    def _scales(self) -> tuple[float, float, float]:
        """(luma offset, luma scale, chroma scale) of the native levels."""
        if self.full_range or self.is_rgb:
            return 0.0, float(2 ** self.bits - 1), float(2 ** self.bits - 1)
        step = float(2 ** (self.bits - 8))
        return 16.0 * step, 219.0 * step, 224.0 * step

    def _rgb_from_ycc(self, y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
        kg = 1.0 - self.kr - self.kb
        r = y + 2 * (1 - self.kr) * cr
        b = y + 2 * (1 - self.kb) * cb
        g = (y - self.kr * r - self.kb * b) / kg
        return np.stack([r, g, b], -1)

    def _ycc_from_rgb(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        y = self.kr * r + (1 - self.kr - self.kb) * g + self.kb * b
        return y, (b - y) / (2 * (1 - self.kb)), (r - y) / (2 * (1 - self.kr))

    def signal(self, planes: list[np.ndarray], factors: list[tuple[int, int]]) -> np.ndarray:
        """Normalised encoded RGB (h, w, 3) float64 of planes covering one luma region; factors[i] is
        plane i's subsampling (rows, columns of luma per sample)."""
        offset, luma, chroma = self._scales()
        if self.is_rgb:
            if self.rgb_planes is None:  # packed rgb24
                return planes[0].astype(np.float64) / luma
            return np.stack([planes[i].astype(np.float64) for i in self.rgb_planes], -1) / luma
        y = (planes[0].astype(np.float64) - offset) / luma
        if len(planes) < 3:  # grey
            return np.repeat(y[..., None], 3, -1)
        h, w = y.shape
        half = float(2 ** (self.bits - 1))
        cb, cr = (_upsample(p.astype(np.float64), fy, fx)[:h, :w] - half
                  for p, (fy, fx) in zip(planes[1:3], factors[1:3]))
        return self._rgb_from_ycc(y, cb / chroma, cr / chroma)

    def to_working(self, planes: list[np.ndarray], factors: list[tuple[int, int]]) -> np.ndarray:
        """Float32 RGB in 0..255 (working space, not clipped) of planes covering one luma region."""
        return (self._to_sdr(self.signal(planes, factors)) * 255.0).astype(np.float32)

    def add_change(self, planes: list[np.ndarray], factors: list[tuple[int, int]], delta: np.ndarray) -> bool:
        """Add a working-space change (h, w, 3 float, 0..255 scale) to planes covering the same luma
        region, in place. Samples whose change is zero are not written; returns whether any changed."""
        # SDR: a zero change is a zero difference, which adds nothing to a sample
        d = self._hdr_change(planes, factors, delta) if self.is_hdr else delta.astype(np.float64) / 255.0
        offset, luma, chroma = self._scales()
        top = 2 ** self.bits - 1
        if self.is_rgb:
            order = (0, 1, 2) if self.rgb_planes is None else self.rgb_planes
            targets = [(planes[0][..., c], d[..., c]) for c in order] if self.rgb_planes is None \
                else [(planes[p], d[..., c]) for c, p in enumerate(order)]
            wrote = False
            for target, change in targets:
                wrote |= _add(target, change * luma, top)
            return wrote
        dy, dcb, dcr = self._ycc_from_rgb(d)
        wrote = _add(planes[0], dy * luma, top)
        for plane, (fy, fx), change in zip(planes[1:3], factors[1:3], (dcb, dcr)):
            wrote |= _add(plane, _area_mean(change, plane.shape, fy, fx) * chroma, top)
        return wrote

    def _hdr_change(self, planes: list[np.ndarray], factors: list[tuple[int, int]], delta: np.ndarray) -> np.ndarray:
        """The change of the normalised signal a working-space change makes, zero where it is zero (not
        even the round trip's float error is written there)."""
        old = self.signal(planes, factors)
        d = self._from_sdr(self._to_sdr(old) + delta / 255.0) - old
        d[~np.any(delta != 0, axis=-1)] = 0.0
        return d


def _add(target: np.ndarray, change: np.ndarray, top: int) -> bool:
    """target += change, rounded and clipped to the sample range; writes only the samples that change."""
    new = np.add(target, change, dtype=np.float64)
    new = np.clip(np.rint(new, out=new), 0, top, out=new).astype(target.dtype)
    where = new != target
    if not where.any():
        return False
    np.copyto(target, new, where=where)
    return True


def _area_mean(values: np.ndarray, shape: tuple[int, int], fy: int, fx: int) -> np.ndarray:
    """Mean over the fy x fx luma samples each chroma sample covers (edge blocks padded), at `shape`."""
    if fy == 1 and fx == 1:
        return values
    h, w = values.shape
    pad = ((0, shape[0] * fy - h), (0, shape[1] * fx - w))
    padded = np.pad(values, pad, mode="edge") if pad[0][1] or pad[1][1] else values  # paste's boxes need none
    # numpy's own mean: the order of its additions (which decides the samples' rounding) depends on the shape
    return padded.reshape(shape[0], fy, shape[1], fx).mean(axis=(1, 3))


def _upsample(plane: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """A chroma plane at luma resolution, sample centres kept (bilinear)."""
    if fy == 1 and fx == 1:
        return plane
    h, w = plane.shape
    return cv2.resize(plane, (w * fx, h * fy), interpolation=cv2.INTER_LINEAR)


def check_transfer(transfer: int, hdr: str) -> None:
    """Refuse, before any work, a transfer the face path cannot take (or HDR when `hdr` is not convert)."""
    if transfer in _UNSUPPORTED_TRANSFERS:
        raise ReelfaceError(f"the video's transfer is {_UNSUPPORTED_TRANSFERS[transfer]}, which the face "
                            "restorers cannot take and reelface cannot convert; convert the video to BT.709, "
                            "PQ or HLG first")
    if transfer in (PQ, HLG) and hdr != "convert":
        raise ReelfaceError(f"the video is HDR ({TRANSFER_NAMES[transfer]}) and {HDR_OPTION} is '{hdr}': the "
                            f"restorers are trained on SDR faces; set {HDR_OPTION}=convert to restore its faces "
                            "in an SDR working space and convert them back exactly")


TRANSFER_NAMES = {PQ: "PQ", HLG: "HLG"}


def colour_for(fmt, bits: int, colorspace: int, color_range: int, transfer: int, primaries: int) -> Colour:
    """The Colour of an av.VideoFormat with a stream's tags."""
    rgb_planes = None
    if fmt.is_rgb and fmt.name != "rgb24":
        rgb_planes = tuple(c.plane for c in fmt.components[:3])
    kr, kb = _MATRIX_COEFFS.get(colorspace, _BT601)
    return Colour(bits=bits, is_rgb=bool(fmt.is_rgb), full_range=color_range == 2, kr=kr, kb=kb,
                  transfer=transfer, bt2020=primaries == BT2020_PRIMARIES, rgb_planes=rgb_planes)


# -- geometry -------------------------------------------------------------------------------------------

# SARs this close to 1 come from rounding after a crop (389/388 on a real clip): resampling for them
# would soften every face more than the 1-pixel aspect error it corrects
SQUARE_TOLERANCE = 0.01

@dataclass(frozen=True)
class Geometry:
    """A picture grid of `shape` (h, w) and the affine map (2x3) of its pixel centres into display space."""

    shape: tuple[int, int]
    to_display: np.ndarray
    display_shape: tuple[int, int]

    @property
    def is_identity(self) -> bool:
        return self.shape == self.display_shape and np.array_equal(self.to_display, np.eye(2, 3))

    def display(self, image: np.ndarray) -> np.ndarray:
        """The grid's image resampled into display space (exact for 90-degree turns)."""
        if self.is_identity:
            return image
        h, w = self.display_shape
        return cv2.warpAffine(image, self.to_display.astype(np.float64), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


def _affine(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def display_geometry(frame_shape: tuple[int, int], rotation: int, sar, field: int | None) -> Geometry:
    """The grid of a whole frame (field None) or of field 0/1 (rows 0, 2, .. / 1, 3, ..) -> display:
    field rows into frame rows (row y of field p is frame row 2y + p), the sample aspect ratio to square
    pixels (stretching, never shrinking), then the display rotation (counter-clockwise, as a player
    applies it)."""
    if rotation % 90:
        raise ReelfaceError(f"the video's display rotation is {rotation} degrees; reelface handles multiples "
                            "of 90 only: rotate the video first")
    frame_h, frame_w = frame_shape
    m = np.eye(3)
    shape = (frame_h, frame_w)
    if field is not None:
        shape = (len(range(field, frame_h, 2)), frame_w)
        m = _affine(np.array([[1.0, 0, 0], [0, 2.0, field]]))
    ratio = float(sar) if sar else 1.0
    if ratio > 0 and abs(ratio - 1.0) > SQUARE_TOLERANCE:
        new_w, new_h = (int(round(frame_w * ratio)), frame_h) if ratio > 1 else (frame_w, int(round(frame_h / ratio)))
        sx, sy = new_w / frame_w, new_h / frame_h  # pixel centres: x' + 0.5 = (x + 0.5) * s
        m = _affine(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])) @ m
        frame_h, frame_w = new_h, new_w
    # one counter-clockwise turn (np.rot90) maps (x, y) -> (y, W - 1 - x)
    for _ in range((rotation // 90) % 4):
        m = _affine(np.array([[0.0, 1, 0], [-1, 0, frame_w - 1]])) @ m
        frame_h, frame_w = frame_w, frame_h
    return Geometry(shape=shape, to_display=m[:2], display_shape=(frame_h, frame_w))


def describe(info) -> dict[str, str]:
    """What the face path did about precision, HDR, pixel aspect, fields and rotation (for the report)."""
    sar = info.sar or 1
    fields = {"tt": "top", "bt": "top", "bb": "bottom", "tb": "bottom"}
    return {
        "precision": f"{info.bit_depth}-bit {info.pix_fmt}: float face crops from the native planes, only "
                     "changed samples written back",
        "hdr": (f"{TRANSFER_NAMES[info.color_trc]}: faces restored in the SDR working space (BT.709, gamma "
                f"{SDR_GAMMA}, reference white at 255) and converted back exactly; colour tags kept"
                if info.color_trc in TRANSFER_NAMES else "SDR: faces restored as decoded"),
        "pixel_aspect": (f"SAR {sar}: faces aligned, restored and pasted in square pixels, written back on the "
                         "stored grid" if abs(float(sar) - 1) > SQUARE_TOLERANCE else "square pixels"),
        "fields": (f"interlaced ({info.field_order}, {fields[info.field_order]} field first): each field "
                   "restored on its own and written back into its own rows; field order kept"
                   if info.field_order in fields else "progressive"),
        "rotation": (f"stored turned, shown rotated {info.rotation} degrees: faces found and aligned upright, "
                     "written back in the stored orientation; display matrix kept"
                     if info.rotation else "none"),
    }
