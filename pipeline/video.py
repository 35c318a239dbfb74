"""Frame-exact video I/O with PyAV: probe, streaming decode to RGB, paste into native planes, encode.

Everything here keeps the input's own timing: frames are identified by their pts in the source
stream's time base (VFR and odd rates stay exact), and pixels are kept in the source's native planes
so that whatever is not pasted over is re-encoded from exactly the decoded samples.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from . import align
from .errors import ReelfaceError
from .picture import TRANSFER_NAMES, Geometry, colour_for, display_geometry

# FFmpeg's names for the AVCOL_* values (the ones ffprobe prints), for probe output and messages.
PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRANSFERS = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
             8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428",
             18: "arib-std-b67"}
MATRICES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
            7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}
RANGES = {0: "unknown", 1: "tv", 2: "pc"}
FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}  # AVFieldOrder
# the field shown first: top for tt and bt (bottom coded first, top displayed first), else bottom
_FIRST_FIELD = {"tt": 0, "bt": 0, "bb": 1, "tb": 1}

# AVCOL_SPC_* -> swscale's matrix constant (SWS_CS_*); unknown matrices use swscale's default (BT.601)
# in both directions, so RGB -> native -> RGB stays consistent.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


@dataclass
class VideoInfo:
    path: str
    format: str  # container format name(s), as libavformat reports them
    video_index: int  # the stream that is decoded and restored
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    color_primaries: int  # AVCOL_PRI_*
    color_trc: int  # AVCOL_TRC_*
    colorspace: int  # AVCOL_SPC_* (the YUV matrix)
    color_range: int  # AVCOL_RANGE_* (1 limited/tv, 2 full/pc)
    rotation: int  # degrees counter-clockwise, from the display matrix (what a player applies)
    sar: Fraction | None
    time_base: Fraction
    frame_count: int
    pts: list[int]  # every frame's pts in presentation order, in time_base
    keyframes: list[int]  # frame indices of keyframes (decoding can start there)
    average_rate: Fraction | None
    is_vfr: bool
    start_time: float  # seconds, first frame's pts
    duration: float  # seconds, first frame's start to last frame's end
    streams: list[dict[str, Any]] = field(default_factory=list)
    chapters: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    display_matrix: list[int] | None = None  # the raw 3x3 matrix (rotation and flips), copied to the output
    field_order: str = "progressive"  # FIELD_ORDERS name: tt/bb/tb/bt are interlaced

    @property
    def interlaced(self) -> bool:
        return self.field_order in _FIRST_FIELD

    @property
    def fields(self) -> tuple[int | None, ...]:
        """The pictures the face path works on per frame: (None,) the frame; (0, 1) or (1, 0) its fields,
        the one shown first first."""
        if not self.interlaced:
            return (None,)
        first = _FIRST_FIELD[self.field_order]
        return (first, 1 - first)

    @property
    def field_order_code(self) -> int:
        """The AVFieldOrder value (what encoders and muxers take)."""
        return {name: code for code, name in FIELD_ORDERS.items()}[self.field_order]

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of the pictures faces are found in: upright, square pixels."""
        h, w = display_geometry((self.height, self.width), self.rotation, self.sar, None).display_shape
        return w, h

    @property
    def dar(self) -> Fraction:
        """Display aspect ratio of the stored frame (before rotation)."""
        return Fraction(self.width, self.height) * (self.sar or 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: fractions as 'num/den' strings, colour tags by FFmpeg name, DAR and HDR added."""
        data = asdict(self)
        data["dar"] = self.dar
        data["hdr"] = TRANSFER_NAMES.get(self.color_trc)  # PQ, HLG or None (SDR)
        for key in ("sar", "dar", "time_base", "average_rate"):
            data[key] = None if data[key] is None else f"{data[key].numerator}/{data[key].denominator}"
        data["color_primaries"] = PRIMARIES.get(self.color_primaries, str(self.color_primaries))
        data["color_trc"] = TRANSFERS.get(self.color_trc, str(self.color_trc))
        data["colorspace"] = MATRICES.get(self.colorspace, str(self.colorspace))
        data["color_range"] = RANGES.get(self.color_range, str(self.color_range))
        return data

    def seconds(self, pts: int) -> Fraction:
        return pts * self.time_base


def _check_input_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise ReelfaceError(f"input file not found: {p} (check the path)")
    if p.is_dir():
        raise ReelfaceError(f"input {p} is a directory; give a video file")
    if p.stat().st_size == 0:
        raise ReelfaceError(f"input {p} is empty (0 bytes): the file is truncated or was not written")
    return p


def open_input(path: str | Path) -> av.container.InputContainer:
    """av.open with the user-facing error for files libavformat cannot read."""
    p = _check_input_path(path)
    try:
        return av.open(str(p), "r")
    except av.error.FFmpegError as exc:
        raise ReelfaceError(
            f"{p} is not a video file that FFmpeg can read ({exc.strerror or exc}); "
            "if it should be, it is truncated or corrupt: re-copy or re-export it") from None


def video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    """The stream to restore: the first video stream that is not cover art."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams) or "none"
    raise ReelfaceError(f"{path} has no video stream (streams: {kinds}); reelface needs a video")


def _bit_depth(fmt: av.VideoFormat) -> int:
    return max(c.bits for c in fmt.components)


def _stream_dict(stream: av.stream.Stream) -> dict[str, Any]:
    cc = stream.codec_context
    entry: dict[str, Any] = {
        "index": stream.index, "type": stream.type, "codec": cc.name if cc else None,
        "language": stream.metadata.get("language"), "title": stream.metadata.get("title"),
        "disposition": [d.name for d in av.stream.Disposition if stream.disposition & d],
        "time_base": None if stream.time_base is None else str(stream.time_base),
    }
    if cc is None:
        return entry
    if stream.type == "audio":
        entry.update(sample_rate=cc.sample_rate, channels=cc.channels, layout=cc.layout.name)
    elif stream.type == "video":
        entry.update(width=cc.width, height=cc.height, pix_fmt=cc.pix_fmt)
    return entry


def _demux_video_timing(container, stream, path) -> tuple[list[int], list[int], list[int]]:
    """(pts in presentation order, keyframe indices, packet durations) from the packets alone (no decode)."""
    pts: list[int] = []
    key_pts: list[int] = []
    durations: list[int] = []
    try:
        for packet in container.demux(stream):
            # A packet without timestamps is the demuxer's end-of-stream marker; discarded packets
            # (before an edit list's start) never become frames.
            if packet.size == 0 or packet.is_discard:
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                raise ReelfaceError(f"{path}: video packets carry no timestamps; remux it (e.g. to .mkv) first")
            pts.append(ts)
            durations.append(packet.duration or 0)
            if packet.is_keyframe:
                key_pts.append(ts)
    except av.error.FFmpegError as exc:
        raise ReelfaceError(f"{path} is corrupt: reading packets failed after {len(pts)} video frames "
                            f"({exc.strerror or exc}); re-copy or re-export the file") from None
    pts.sort()
    keyframes = sorted({bisect.bisect_left(pts, k) for k in key_pts})
    return pts, keyframes, durations


def _declared_end(stream, first_pts: int) -> Fraction | None:
    """Where the header says the video ends (seconds): start + stream duration, or Matroska's
    per-track DURATION tag (which is the end time, counted from 0)."""
    if stream.duration and stream.time_base:
        return (first_pts + stream.duration) * stream.time_base
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag and tag.count(":") == 2:
        h, m, sec = tag.split(":")
        return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
    return None


def _check_complete(path, container, stream, pts: list[int], durations: list[int]) -> None:
    """A truncated file still has its header: compare what the header promises with what is there."""
    if not pts:
        raise ReelfaceError(f"{path}: the video stream has no frames; the file is truncated or corrupt")
    entries = len(stream.index_entries)
    if container.format.name.startswith("mov") and entries > len(pts):
        raise ReelfaceError(f"{path} is truncated: its index lists {entries} video frames but only "
                            f"{len(pts)} are in the file; re-copy or re-export it")
    declared = _declared_end(stream, pts[0])
    if declared is not None:
        frame = max(durations) if any(durations) else 0
        have = (pts[-1] + frame) * stream.time_base
        if have + max(2 * frame * stream.time_base, Fraction(1, 5)) < declared:
            raise ReelfaceError(f"{path} is truncated: the header says the video lasts until "
                                f"{float(declared):.2f} s but frames stop at {float(have):.2f} s; "
                                "re-copy or re-export it")


def _first_frame(path) -> av.VideoFrame:
    with open_input(path) as container:
        stream = video_stream(container, path)
        try:
            for frame in container.decode(stream):
                return frame
        except av.error.FFmpegError as exc:
            raise ReelfaceError(f"{path}: the first video frame cannot be decoded ({exc.strerror or exc}); "
                                "the file is corrupt") from None
    raise ReelfaceError(f"{path}: no video frame could be decoded; the file is truncated or corrupt")


def _display_matrix(frame: av.VideoFrame) -> list[int] | None:
    try:
        data = bytes(frame.side_data["DISPLAYMATRIX"])
    except KeyError:
        return None
    return [int(v) for v in np.frombuffer(data, np.int32)]


def probe(path: str | Path) -> VideoInfo:
    """Streams, colour, timing and keyframes of a video, without decoding more than one frame."""
    p = _check_input_path(path)
    stat = p.stat()
    return _probe_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _probe_cached(path: str, _mtime_ns: int, _size: int) -> VideoInfo:
    # decode() probes too (for keyframes and pts -> index): cache per file version, not per call.
    with open_input(path) as container:
        stream = video_stream(container, path)
        cc = stream.codec_context
        streams = [_stream_dict(s) for s in container.streams]
        metadata = dict(container.metadata)
        chapters = len(container.chapters())
        fmt_name = container.format.name
        pts, keyframes, durations = _demux_video_timing(container, stream, path)
        _check_complete(path, container, stream, pts, durations)
        time_base = stream.time_base
        average_rate = stream.average_rate
        sar = stream.sample_aspect_ratio or None
        codec = cc.name
        video_index = stream.index
        field_order = FIELD_ORDERS.get(cc.field_order, "unknown")
    first = _first_frame(path)
    if field_order in ("unknown", "progressive") and first.interlaced_frame:
        field_order = "tt"  # flagged interlaced without an order: top first, the common order
    steps = np.diff(pts) if len(pts) > 1 else np.array([0])
    last = int(np.median(steps)) if len(pts) > 1 else (durations[-1] if durations else 0)
    if average_rate is None and len(pts) > 1:
        average_rate = Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * time_base)
    return VideoInfo(
        path=path, format=fmt_name, video_index=video_index, codec=codec,
        width=first.width, height=first.height, pix_fmt=first.format.name,
        bit_depth=_bit_depth(first.format),
        color_primaries=int(first.color_primaries), color_trc=int(first.color_trc),
        colorspace=int(first.colorspace), color_range=int(first.color_range),
        rotation=int(first.rotation) % 360, display_matrix=_display_matrix(first), sar=sar,
        time_base=time_base, frame_count=len(pts), pts=pts, keyframes=keyframes or [0],
        average_rate=average_rate,
        # one tick of slack: containers with a coarse clock (mkv, 1 ms) round a constant rate
        is_vfr=bool(steps.max() - steps.min() > 1),
        start_time=float(pts[0] * time_base), duration=float((pts[-1] - pts[0] + last) * time_base),
        streams=streams, chapters=chapters, metadata=metadata,
        field_order="progressive" if field_order == "unknown" else field_order)


def rgb_conversions(info: VideoInfo, fmt: av.VideoFormat) -> tuple[dict, dict]:
    """reformat() arguments for native -> RGB and RGB -> native with the source's matrix and range.

    An untagged YUV range is read as limited, as players do; RGB sources are full range, no matrix.
    One thread: swscale's sliced threads dither 10-bit output differently from run to run.
    """
    if fmt.is_rgb:
        return ({"src_color_range": _FULL_RANGE, "dst_color_range": _FULL_RANGE, "threads": 1},
                {"src_color_range": _FULL_RANGE, "dst_color_range": _FULL_RANGE, "threads": 1})
    matrix = _SWS_MATRIX.get(info.colorspace)
    yuv_range = info.color_range if info.color_range in (1, 2) else 1
    return ({"src_colorspace": matrix, "src_color_range": yuv_range, "dst_color_range": _FULL_RANGE,
             "threads": 1},
            {"src_color_range": _FULL_RANGE, "dst_colorspace": matrix, "dst_color_range": yuv_range,
             "threads": 1})


class Frame:
    """One decoded video frame: its index and pts, its native planes, the pictures the face path works on
    (`views()`: the frame, or each field of an interlaced frame) and an 8-bit display picture (`rgb`)."""

    __slots__ = ("index", "pts", "_frame", "_rgb", "_info", "_colour", "_to_rgb", "pasted")

    def __init__(self, index: int, pts: int, frame: av.VideoFrame, info: VideoInfo):
        self.index = index
        self.pts = pts
        self._frame = frame
        self._rgb: np.ndarray | None = None
        self._info = info
        self._colour = _colour(frame.format.name, info.colorspace, info.color_range, info.color_trc,
                               info.color_primaries)
        self._to_rgb = rgb_conversions(info, frame.format)[0]
        self.pasted = False

    @property
    def native(self) -> av.VideoFrame:
        """The frame in the source's pixel format (what the writer encodes)."""
        return self._frame

    def planes(self) -> list[np.ndarray]:
        """Copies of the native sample planes (no line padding): what exactness is checked on."""
        return [_plane_view(self._frame, i).copy() for i in range(len(self._frame.planes))]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) as stored."""
        return self._frame.height, self._frame.width

    def views(self) -> list["FrameView"]:
        return [FrameView(self, field) for field in self._info.fields]

    @property
    def rgb(self) -> np.ndarray:
        """uint8 (H, W, 3) RGB as a viewer sees it: upright, square pixels, the first field of an
        interlaced frame, HDR in the SDR working space (cached; read-only). Faces are found in it."""
        if self._rgb is None:
            view = FrameView(self, self._info.fields[0])
            if self._colour.is_hdr:  # swscale cannot tone-map: faces would be found in dim PQ/HLG codes
                picture = np.clip(np.rint(view.working((0, view.geometry.shape[0], 0, view.geometry.shape[1]))),
                                  0, 255).astype(np.uint8)
            else:  # swscale: fast, and exactly the picture detection was tuned on
                picture = self._frame.to_ndarray() if self._frame.format.name == "rgb24" else \
                    self._frame.reformat(format="rgb24", **self._to_rgb).to_ndarray()
                if view.field is not None:
                    picture = picture[view.field::2]
            rgb = np.ascontiguousarray(view.geometry.display(picture))
            rgb.flags.writeable = False
            self._rgb = rgb
        return self._rgb


@functools.lru_cache(maxsize=32)
def _colour(pix_fmt: str, colorspace: int, color_range: int, transfer: int, primaries: int):
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    return colour_for(fmt, _bit_depth(fmt), colorspace, color_range, transfer, primaries)


_geometry = functools.lru_cache(maxsize=32)(display_geometry)

CROP_MARGIN = 6  # grid pixels converted around a crop's footprint (the luma recut's Lanczos taps, chroma interpolation)


class FrameView:
    """One picture of a frame in the face path: the whole frame, or one field (every other row) of an
    interlaced one. Crops come from its native planes at full precision through one warp from its grid
    (`geometry`: grid -> display space) into the crop; changes go back into the same native samples."""

    __slots__ = ("frame", "field", "geometry")

    def __init__(self, frame: Frame, field: int | None):
        self.frame = frame
        self.field = field
        info = frame._info
        self.geometry: Geometry = _geometry(frame.shape, info.rotation, info.sar, field)

    @property
    def index(self) -> int:
        return self.frame.index

    def _planes(self) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        """Writable views of the colour planes of this picture and each plane's subsampling factors."""
        native = self.frame._frame
        fmt = native.format
        colour_planes = sorted({c.plane for c in fmt.components if not c.is_alpha})
        planes = [_plane_view(native, i) for i in colour_planes]
        if self.field is not None:
            planes = [p[self.field::2] for p in planes]
        h, w = planes[0].shape[:2]
        return planes, [(-(-h // p.shape[0]), -(-w // p.shape[1])) for p in planes]

    def _region(self, box: tuple[int, int, int, int]) -> tuple[list[np.ndarray], list[tuple[int, int]],
                                                                 tuple[int, int, int, int]]:
        """The planes' samples covering luma box (y0, y1, x0, x1), grown to whole chroma samples."""
        planes, factors = self._planes()
        fy = max(f[0] for f in factors)
        fx = max(f[1] for f in factors)
        h, w = planes[0].shape[:2]
        y0, y1, x0, x1 = box
        y0, x0 = y0 // fy * fy, x0 // fx * fx
        y1, x1 = min(h, -(-y1 // fy) * fy), min(w, -(-x1 // fx) * fx)
        region = [p[y0 // a:-(-y1 // a), x0 // b:-(-x1 // b)] for p, (a, b) in zip(planes, factors)]
        return region, factors, (y0, y1, x0, x1)

    def working(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Float32 working-space RGB (0..255, not clipped) of the luma box (y0, y1, x0, x1) of the grid."""
        region, factors, (y0, y1, x0, x1) = self._region(box)
        rgb = self.frame._colour.to_working(region, factors)
        return rgb[box[0] - y0:box[1] - y0, box[2] - x0:box[3] - x0]

    def face_crops(self, transforms: np.ndarray, size: int = align.CROP_SIZE,
                   out: np.ndarray | None = None) -> np.ndarray:
        """Aligned crops (N, size, size, 3) float32 in 0..255 for display->crop transforms (N, 2, 3), into
        `out` when given (a caller gathering a run's crops: no copy of each)."""
        h, w = self.geometry.shape
        crops = np.empty((len(transforms), size, size, 3), np.float32) if out is None else out
        for k, m in enumerate(align.compose(transforms, self.geometry.to_display)):
            box = align.crop_box(m, size, (h, w), CROP_MARGIN)
            if box is None:  # the crop is all outside the picture: nothing there to restore
                crops[k] = 0
                continue
            x0, y0, x1, y1 = box
            region = self.working((y0, y1, x0, x1))
            align.warp_faces(region, align.shift_origin(m, x0, y0)[None], size, crops[k:k + 1])
        return np.clip(crops, 0, 255, out=crops)

    def paste(self, delta: np.ndarray, at: tuple[int, int] = (0, 0)) -> None:
        """Add a change (h, w, 3 float, working space 0..255) whose top-left pixel is grid pixel `at`
        (row, column) to the native samples; samples whose change is zero are not written (a zero change
        writes nothing, at any bit depth)."""
        top, left = at
        if delta.ndim != 3 or delta.shape[2] != 3 or min(top, left) < 0 \
                or top + delta.shape[0] > self.geometry.shape[0] or left + delta.shape[1] > self.geometry.shape[1]:
            raise ValueError(f"paste needs a change (h, w, 3) inside the {self.geometry.shape} grid, got "
                             f"{delta.shape} at {at}")
        box = _changed_box(delta)
        if box is None:
            return
        self.frame._frame.make_writable()  # copies the decoder's buffer if it is still referenced
        bx0, by0, bx1, by1 = box
        region, factors, (y0, y1, x0, x1) = self._region((top + by0, top + by1, left + bx0, left + bx1))
        # the region is the changed box grown to whole chroma samples; the change is zero on that rim
        change = np.zeros((y1 - y0, x1 - x0, 3), delta.dtype)
        change[top + by0 - y0:top + by1 - y0, left + bx0 - x0:left + bx1 - x0] = delta[by0:by1, bx0:bx1]
        if self.frame._colour.add_change(region, factors, change):
            self.frame._rgb = None
            self.frame.pasted = True


def _changed_box(delta: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the pixels of a change (h, w, 3) with any channel non-zero, or None:
    one OpenCV pass over the samples as a (h, 3w) image, where numpy's any over 3 channels cost 25 times as
    much."""
    h, w = delta.shape[:2]
    x, y, width, height = cv2.boundingRect(cv2.compare(np.ascontiguousarray(delta).reshape(h, w * 3), 0, cv2.CMP_NE))
    if not width:
        return None
    return x // 3, y, -(-(x + width) // 3), y + height


# Pixel formats whose samples are not one component per plane (or are big-endian) are converted at
# decode time to the planar format of the same subsampling and depth, which paste() can write into.
_PLANAR_EQUIVALENT = {"nv12": "yuv420p", "nv21": "yuv420p", "nv16": "yuv422p", "nv24": "yuv444p",
                      "yuyv422": "yuv422p", "uyvy422": "yuv422p", "p010le": "yuv420p10le",
                      "p016le": "yuv420p16le", "p210le": "yuv422p10le", "p410le": "yuv444p10le"}


def working_format(fmt: av.VideoFormat) -> str:
    """The pixel format frames are kept in: the source's own when paste() can write into it."""
    if fmt.name in _PLANAR_EQUIVALENT:
        return _PLANAR_EQUIVALENT[fmt.name]
    planes = [c.plane for c in fmt.components]
    if fmt.name == "rgb24" or (len(set(planes)) == len(planes) and not fmt.is_big_endian
                               and not fmt.has_palette and not fmt.is_bit_stream):
        return fmt.name
    if fmt.is_rgb:
        return "rgb24" if _bit_depth(fmt) <= 8 else "gbrp16le"
    return "yuv444p" if _bit_depth(fmt) <= 8 else "yuv444p16le"


def _plane_view(frame: av.VideoFrame, index: int) -> np.ndarray:
    """Writable numpy view of one plane without its line padding: (h, w) or (h, w, 3) for rgb24."""
    plane = frame.planes[index]
    if frame.format.name == "rgb24":
        return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width * 3] \
            .reshape(plane.height, plane.width, 3)
    dtype = np.uint16 if _bit_depth(frame.format) > 8 else np.uint8
    itemsize = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:, : plane.width]


def decode(path: str | Path, start: int = 0, stop: int | None = None,
           info: VideoInfo | None = None) -> Iterator[Frame]:
    """Frames [start, stop) in presentation order, streaming; starts decoding at the keyframe at/before start."""
    info = info or probe(path)
    stop = info.frame_count if stop is None else min(stop, info.frame_count)
    if not 0 <= start <= info.frame_count:
        raise ValueError(f"start {start} outside 0..{info.frame_count}")
    if start >= stop:
        return
    key = info.keyframes[bisect.bisect_right(info.keyframes, start) - 1] if start else 0
    expected = start
    for frame in _decode_from(path, info, key, start, stop):
        if frame.shape != (info.height, info.width):
            raise size_change_error(path, info, frame.index, frame.shape)
        if frame.index != expected:
            raise ReelfaceError(f"{path}: frame {expected} could not be decoded (got frame {frame.index} "
                                "next); the file is corrupt")
        expected += 1
        yield frame
    if expected != stop:
        raise ReelfaceError(f"{path}: only frames {start}..{expected - 1} of {start}..{stop - 1} could be "
                            "decoded; the file is truncated or corrupt")


def size_change_error(path, info: VideoInfo, index: int, shape: tuple[int, int]) -> ReelfaceError:
    """The frame size changes mid-stream: one restore keeps one size (segments, paste masks and the
    encoder are all sized once), so such a video is split or scaled first."""
    return ReelfaceError(f"{path} changes frame size mid-stream at frame {index} ({info.width}x{info.height} -> "
                         f"{shape[1]}x{shape[0]}); reelface restores one size per video: split it at that frame "
                         "or scale it to one size first (ffmpeg -vf scale=W:H)")


def check_one_size(path, info: VideoInfo) -> None:
    """Refuse a video whose frame size changes, before any work. Only keyframes are decoded: a new size
    starts a new coded sequence, which starts with a keyframe."""
    with open_input(path) as container:
        stream = container.streams[info.video_index]
        stream.codec_context.skip_frame = "NONKEY"
        try:
            for frame in container.decode(stream):
                if (frame.height, frame.width) != (info.height, info.width):
                    index = bisect.bisect_left(info.pts, frame.pts) if frame.pts is not None else -1
                    raise size_change_error(path, info, index, (frame.height, frame.width))
        except av.error.FFmpegError as exc:
            raise ReelfaceError(f"{path}: decoding failed ({exc.strerror or exc}); the file is corrupt") from None


def _decode_from(path, info: VideoInfo, key: int, start: int, stop: int) -> Iterator[Frame]:
    index_of = {p: i for i, p in enumerate(info.pts)}
    container = open_input(path)
    try:
        stream = container.streams[info.video_index]
        stream.thread_type = "AUTO"
        if key > 0:
            container.seek(info.pts[key], stream=stream, backward=True)
        previous = -1
        work_format = None
        try:
            for packet in container.demux(stream):
                for av_frame in packet.decode():
                    index = index_of.get(av_frame.pts, previous + 1) if av_frame.pts is not None else previous + 1
                    if key > 0 and previous < 0 and index > start:
                        # the seek landed after the wanted frame: decode from the top instead
                        yield from _decode_from(path, info, 0, start, stop)
                        return
                    previous = index
                    work_format = work_format or working_format(av_frame.format)
                    if index < start:
                        continue
                    if index >= stop:
                        return
                    if av_frame.format.name != work_format:
                        av_frame = av_frame.reformat(format=work_format, threads=1)
                    av_frame.pict_type = av.video.frame.PictureType.NONE
                    yield Frame(index, info.pts[index] if index < info.frame_count else av_frame.pts,
                                av_frame, info)
        except av.error.FFmpegError as exc:
            raise ReelfaceError(f"{path}: decoding failed after frame {previous} ({exc.strerror or exc}); "
                                "the file is corrupt") from None
    finally:
        container.close()


# Encoder options that are not quality knobs: quiet logs, archival robustness for FFV1.
_CODEC_OPTIONS = {
    "libx264": lambda cfg: {"crf": str(cfg.crf), "preset": cfg.preset},
    "libx265": lambda cfg: {"crf": str(cfg.crf), "preset": cfg.preset, "x265-params": "log-level=error"},
    "prores_ks": lambda cfg: {"profile": "3"},  # HQ; 4444 formats get 4444 from the encoder itself
    "ffv1": lambda cfg: {"level": "3", "slicecrc": "1", "g": "1"},  # intra-only, CRC per slice
}


def _subsampling(name: str) -> tuple[int, int]:
    fmt = av.VideoFormat(name, 64, 64)
    return 64 // max(fmt.chroma_width(), 1), 64 // max(fmt.chroma_height(), 1)


def choose_pix_fmt(codec: str, source: str, wanted: str | None = None) -> str:
    """The encoder's pixel format: `wanted` if given, else the source's, else the nearest the codec has.

    Nearest = the same bit depth (8-bit stays 8-bit, 10-bit stays 10-bit), colour family (YUV/RGB)
    and chroma subsampling if possible; never less depth when more is available (ProRes is 10-bit only).
    """
    try:
        supported = [f.name for f in av.Codec(codec, "w").video_formats or ()]
    except (av.error.FFmpegError, ValueError):
        raise ReelfaceError(f"encoder '{codec}' is not available in this FFmpeg build; "
                            "use libx264, libx265, prores_ks or ffv1") from None
    if wanted:
        if wanted not in supported:
            raise ReelfaceError(f"encoder {codec} cannot write pixel format {wanted} "
                                f"(it can: {', '.join(supported)}); set encode.pix_fmt to one of them")
        return wanted
    if source in supported:
        return source
    src = av.VideoFormat(source, 64, 64)
    depth, rgb, sub = _bit_depth(src), src.is_rgb, _subsampling(source)
    alpha = any(c.is_alpha for c in src.components)

    def cost(name: str) -> tuple:
        fmt = av.VideoFormat(name, 64, 64)
        d = _bit_depth(fmt)
        return (fmt.is_rgb != rgb, len(fmt.components) != len(src.components), d < depth, abs(d - depth), _subsampling(name) != sub,
                any(c.is_alpha for c in fmt.components) != alpha, name.startswith("yuvj"),
                working_format(fmt) != name, name)

    candidates = [n for n in supported if not av.VideoFormat(n, 64, 64).is_bit_stream]
    return min(candidates, key=cost)


class VideoWriter:
    """Encode frames with their own pts in the source's time base, colour tags and depth family.

    Write to a segment container that keeps exact pts (.nut, or .mp4/.mov with the track timescale
    set to the time base): `mux.assemble` joins the segments into the final file.
    """

    def __init__(self, path: str | Path, info: VideoInfo, encode_cfg):
        self.path = Path(path)
        self.info = info
        self.pix_fmt = choose_pix_fmt(encoder_name(encode_cfg.codec), working_format(av.VideoFormat(info.pix_fmt)), encode_cfg.pix_fmt)
        # MOV segments: a movie timescale equal to the time base keeps the start offset exact
        options = {"movie_timescale": str(info.time_base.denominator)} \
            if self.path.suffix.lower() in (".mp4", ".mov") else {}
        self._container = av.open(str(self.path), "w", container_options=options)
        codec = encoder_name(encode_cfg.codec)
        options = {**_CODEC_OPTIONS.get(codec, lambda c: {})(encode_cfg), **_interlace_options(codec, info)}
        try:
            stream = self._container.add_stream(codec, options=options)
            cc = stream.codec_context
            cc.width, cc.height, cc.pix_fmt = info.width, info.height, self.pix_fmt
            cc.time_base = info.time_base
            stream.time_base = info.time_base
            if info.average_rate:
                cc.framerate = info.average_rate  # a hint for rate control; pts decide the timing
            if info.sar:
                cc.sample_aspect_ratio = info.sar
            if info.interlaced:
                cc.field_order = info.field_order_code
            cc.color_primaries, cc.color_trc = info.color_primaries, info.color_trc
            cc.colorspace, cc.color_range = info.colorspace, info.color_range
            cc.thread_type = "AUTO"
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()

    def write(self, frame: Frame) -> None:
        native = frame.native
        if native.format.name != self.pix_fmt:
            native = self._convert(native)
        native.pts = frame.pts
        native.time_base = self.info.time_base
        for packet in self._stream.encode(native):
            self._container.mux(packet)
        self.frames += 1

    def _convert(self, native: av.VideoFrame) -> av.VideoFrame:
        """To the encoder's pixel format (another depth or subsampling), keeping matrix and range."""
        src_to_rgb, _ = rgb_conversions(self.info, native.format)
        _, rgb_to_dst = rgb_conversions(self.info, av.VideoFormat(self.pix_fmt))
        return native.reformat(format=self.pix_fmt,
                               src_colorspace=src_to_rgb.get("src_colorspace"),
                               src_color_range=src_to_rgb["src_color_range"],
                               dst_colorspace=rgb_to_dst.get("dst_colorspace"),
                               dst_color_range=rgb_to_dst["dst_color_range"], threads=1)

    def close(self) -> None:
        for packet in flush_encoder(self._stream, self.frames):
            self._container.mux(packet)
        self._container.close()


X265_DELAY_FRAMES = 3  # x265's B-frame delay + 1 with its default B-pyramid


def flush_encoder(stream, frames_sent: int) -> list:
    """The encoder's last packets, with decode times a muxer takes.

    x265 leaves the decode times of a stream shorter than X265_DELAY_FRAMES uninitialised (x265 issue
    #781: heap garbage, which the MP4 muxer refuses at random, "not yet implemented"), as a short last
    segment is. Such a stream has no reordered frames, so its decode times are its presentation times."""
    packets = stream.encode(None)
    if stream.codec_context.name == "libx265" and frames_sent < X265_DELAY_FRAMES:
        for packet in packets:
            packet.dts = packet.pts
    return packets


def _interlace_options(codec: str, info: VideoInfo) -> dict[str, str]:
    """x264 codes interlaced frames as fields only when told, and only then flags them so."""
    if codec != "libx264" or not info.interlaced:
        return {}
    return {"flags": "+ildct+ilme", "x264-params": "tff=1" if info.fields[0] == 0 else "bff=1"}


def encoder_name(codec: str) -> str:
    """Config names map to FFmpeg encoders one to one; 'prores' is accepted for prores_ks."""
    return {"prores": "prores_ks"}.get(codec, codec)


def segment_suffix(codec: str) -> str:
    """Segment container that keeps exact pts: MOV (movie timescale = time base) or NUT for FFV1."""
    return ".nut" if encoder_name(codec) == "ffv1" else ".mov"
