"""Test and evaluation clips with known ground truth.

- `clean_clip`: a sharp photo moved along a smooth random similarity path (the ground truth).
- `degrade`: one of the fixed degradations (DEGRADATIONS: the blur, 2x down/up, noise, JPEG chain; H.264 at
  a low bitrate; 3x down/up only; noise only), seeded and deterministic.
- `compose_faces`: several face images moved over backgrounds along given paths, with occluders and
  hard cuts; returns the frames and each face's ground-truth box per frame (for tracking tests).
- `write_clip`: frames to a file with chosen timestamps (VFR), pixel format (10-bit), colour tags (HDR),
  rotation, sample aspect ratio, field order (`interlace` weaves field-rate pictures), and optionally
  audio tracks, a subtitle track, chapters and container metadata.
"""

from __future__ import annotations

import itertools
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .video import flush_encoder


def smooth_path(n_frames: int, seed: int, period: int = 48) -> np.ndarray:
    """(n_frames, 4) smooth random (dx, dy, angle, log_scale) in [-1, 1].

    A random knot every `period` frames, joined by cosine ease (continuous velocity), so the speed
    does not depend on the clip's length; the first knot is 0 (the photo's own framing).
    """
    rng = np.random.default_rng(seed)
    knots = rng.uniform(-1, 1, (n_frames // period + 2, 4))
    knots[0] = 0
    t = np.arange(n_frames) / period
    j = t.astype(int)
    w = ((1 - np.cos(np.pi * (t - j))) / 2)[:, None]
    return knots[j] * (1 - w) + knots[j + 1] * w


def moving_photo(photo: np.ndarray, n_frames: int, size: tuple[int, int], seed: int = 0, shift: float = 0.08,
                 angle: float = 6.0, zoom: float = 0.1, scale: float | None = None,
                 anchor: tuple[float, float] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame, 2x3 transform) pairs, one at a time (long clips without holding them): see clean_clip."""
    width, height = size
    ph, pw = photo.shape[:2]
    # default: cover the frame even when rotated / shifted
    base = scale if scale is not None else 1.25 * max(width / pw, height / ph)
    ax, ay = anchor if anchor is not None else (pw / 2, ph / 2)
    for dx, dy, rot, lz in smooth_path(n_frames, seed):
        m = cv2.getRotationMatrix2D((ax, ay), rot * angle, base * float(np.exp(lz * zoom)))
        m[0, 2] += width / 2 - ax + dx * shift * width
        m[1, 2] += height / 2 - ay + dy * shift * height
        frame = cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
        yield frame, m.astype(np.float32)


def clean_clip(photo: np.ndarray, n_frames: int, size: tuple[int, int], seed: int = 0,
               shift: float = 0.08, angle: float = 6.0, zoom: float = 0.1, scale: float | None = None,
               anchor: tuple[float, float] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (H, W, 3 uint8 RGB) of `photo` seen through a moving camera, and each frame's 2x3 transform.

    size is (width, height); the path moves up to `shift` of the frame, rotates up to `angle` degrees and
    zooms by up to +-`zoom` (log scale). By default the photo is first fitted to cover the frame with a
    margin; with `scale` it is shown at that scale with its point `anchor` (x, y) at the frame's centre
    (the photo reflected beyond its borders).
    """
    pairs = list(moving_photo(photo, n_frames, size, seed, shift, angle, zoom, scale, anchor))
    return [f for f, _ in pairs], np.stack([m for _, m in pairs])


DEGRADATIONS = ("chain", "h264", "down3", "noise")
NOISE_SIGMA = 8.0  # grey levels, in `chain` and `noise`
H264_BITRATE = "250k"  # `h264`: libx264 at this bitrate (640x480 at 30 fps: visible blocking, smeared detail)


def degrade(frames: list[np.ndarray], seed: int = 0, kind: str = "chain") -> list[np.ndarray]:
    """The clip degraded one of the DEGRADATIONS ways:

    - chain: Gaussian blur sigma 1.2, 2x area downscale + bicubic upscale, Gaussian noise sigma 8, JPEG q35
    - h264: H.264 (libx264, preset medium, one thread) at H264_BITRATE, decoded back
    - down3: 3x area downscale + bicubic upscale only
    - noise: Gaussian noise sigma 8 only

    One generator seeded once for the clip: the same frames and seed give the same output, bit for bit.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation '{kind}' (known: {', '.join(DEGRADATIONS)})")
    if kind == "h264":
        return _h264(frames)
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        img = frame
        if kind == "chain":
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=1.2, sigmaY=1.2, borderType=cv2.BORDER_REFLECT101)
        if kind in ("chain", "down3"):
            factor = 2 if kind == "chain" else 3
            img = cv2.resize(img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        if kind in ("chain", "noise"):
            noisy = img.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA, img.shape)
            img = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if kind == "chain":
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 35])
            assert ok, "OpenCV could not JPEG-encode a frame"
            img = cv2.cvtColor(cv2.imdecode(jpg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append(img)
    return out


def _h264(frames: list[np.ndarray]) -> list[np.ndarray]:
    spec = ClipSpec(options={"preset": "medium", "b": H264_BITRATE, "threads": "1"})
    with tempfile.TemporaryDirectory() as tmp:
        path = write_clip(Path(tmp) / "h264.mp4", frames, spec)
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@dataclass
class Occluder:
    """A solid rectangle (x1, y1, x2, y2) drawn over everything in frames [start, stop)."""
    box: tuple[float, float, float, float]
    start: int
    stop: int
    color: tuple[int, int, int] = (40, 40, 40)


def compose_faces(backgrounds: list[np.ndarray], cuts: list[int], faces: dict[int, np.ndarray],
                  paths: dict[int, np.ndarray], occluders: list[Occluder] = ()
                  ) -> tuple[list[np.ndarray], dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Move face images over backgrounds; return frames, ground-truth boxes and visible fractions.

    backgrounds[k] (all the same H, W, 3) is shown from cuts[k-1] (or 0) until cuts[k]: a hard cut at
    each frame in `cuts`. paths[id] is (n_frames, 3): centre x, centre y, face width in pixels
    (NaN: the face is absent). Faces are drawn in id order (a higher id passes in front), then the
    occluders. boxes[id] is (n_frames, 4) float32 x1, y1, x2, y2 (NaN where absent); visible[id]
    is the fraction of the face's box not covered by later faces or occluders.
    """
    n_frames = len(next(iter(paths.values())))
    height, width = backgrounds[0].shape[:2]
    boxes = {fid: np.full((n_frames, 4), np.nan, np.float32) for fid in faces}
    visible = {fid: np.zeros(n_frames, np.float32) for fid in faces}
    frames = []
    for i in range(n_frames):
        frame = backgrounds[sum(1 for c in cuts if c <= i)].copy()
        owner = np.full((height, width), -1, np.int32)  # which face id shows at each pixel
        for fid in sorted(faces):
            cx, cy, w = paths[fid][i]
            if np.isnan(w):
                continue
            img = faces[fid]
            h = w * img.shape[0] / img.shape[1]
            x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
            x2, y2 = x1 + int(round(w)), y1 + int(round(h))
            patch = cv2.resize(img, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
            fx1, fy1, fx2, fy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
            if fx1 >= fx2 or fy1 >= fy2:
                continue
            frame[fy1:fy2, fx1:fx2] = patch[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
            owner[fy1:fy2, fx1:fx2] = fid
            boxes[fid][i] = (x1, y1, x2, y2)
        for occ in occluders:
            if occ.start <= i < occ.stop:
                ox1, oy1, ox2, oy2 = (int(round(v)) for v in occ.box)
                frame[max(oy1, 0):oy2, max(ox1, 0):ox2] = occ.color
                owner[max(oy1, 0):oy2, max(ox1, 0):ox2] = -1
        for fid, box in boxes.items():
            if not np.isnan(box[i, 0]):
                x1, y1, x2, y2 = (int(v) for v in box[i])
                area = (x2 - x1) * (y2 - y1)
                shown = owner[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] == fid
                visible[fid][i] = shown.sum() / area if area else 0.0
        frames.append(frame)
    return frames, boxes, visible


def crossing_paths(n_frames: int, size: tuple[int, int], n_faces: int, cut: int, seed: int = 0,
                   face_width: float = 0.22) -> dict[int, np.ndarray]:
    """Paths for compose_faces: faces 0 and 1 cross in the first shot; after the hard cut at `cut`
    every face reappears at a new random place and drifts slowly (re-identification across the cut)."""
    width, height = size
    rng = np.random.default_rng(seed)
    w = face_width * min(width, height) * 1.4
    paths = {}
    for fid in range(n_faces):
        path = np.empty((n_frames, 3), np.float32)
        t = np.linspace(0, 1, cut)[:, None]
        if fid < 2:  # the crossing pair: left <-> right at slightly different heights
            a = np.array([0.25 if fid == 0 else 0.75, 0.45 + 0.1 * fid])
            b = np.array([0.75 if fid == 0 else 0.25, 0.45 + 0.1 * fid])
        else:
            a = rng.uniform(0.2, 0.8, 2)
            b = np.clip(a + rng.uniform(-0.1, 0.1, 2), 0.2, 0.8)
        path[:cut, :2] = (a + t * (b - a)) * (width, height)
        a2 = rng.uniform(0.2, 0.8, 2)
        t2 = np.linspace(0, 1, n_frames - cut)[:, None]
        path[cut:, :2] = (a2 + t2 * rng.uniform(-0.05, 0.05, 2)) * (width, height)
        path[:, 2] = w * (1 + 0.05 * fid)
        paths[fid] = path
    return paths


@dataclass
class AudioTrack:
    frequency: float = 440.0
    language: str = "eng"
    title: str | None = None


@dataclass
class ClipSpec:
    """How write_clip stores frames. pts are in time_base; None: constant rate 1/rate from 0."""
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    time_base: Fraction = Fraction(1, 30)
    pts: list[int] | None = None
    rotation: int = 0  # degrees counter-clockwise, as VideoInfo.rotation reads it back
    sar: Fraction | None = None  # sample aspect ratio (anamorphic: e.g. 32/27 for 16:9 NTSC DV)
    field_order: int = 0  # AVFieldOrder: 2 top field first, 3 bottom first (frames from `interlace`)
    color: tuple[int, int, int, int] = (1, 1, 1, 1)  # primaries, trc, matrix, range (AVCOL_*): BT.709 tv
    audio: list[AudioTrack] = field(default_factory=list)
    subtitles: list[tuple[float, float, str]] = field(default_factory=list)  # (start s, end s, text)
    chapters: list[tuple[float, float, str]] = field(default_factory=list)  # (start s, end s, title)
    metadata: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=lambda: {"preset": "ultrafast", "crf": "18"})


def write_clip(path: str | Path, frames: Iterable[np.ndarray], spec: ClipSpec = ClipSpec()) -> Path:
    """Encode RGB frames (any iterable: streamed) with PyAV; audio, subtitles and chapters are then
    muxed in by the ffmpeg binary (stream copy of the video)."""
    path = Path(path)
    extras = spec.audio or spec.subtitles or spec.chapters or spec.metadata
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / f"video{path.suffix}" if extras else path
        duration = _write_video(video, frames, spec)
        if extras:
            _add_extras(video, path, spec, duration, Path(tmp))
    return path


def _write_video(path: Path, frames: Iterable[np.ndarray], spec: ClipSpec) -> float:
    """Write the video stream; returns its duration in seconds."""
    options = {"movie_timescale": str(spec.time_base.denominator)} if path.suffix in (".mp4", ".mov") else {}
    frames = iter(frames)
    first = next(frames)
    pts = spec.pts if spec.pts is not None else itertools.count()
    with av.open(str(path), "w", container_options=options) as out:
        options = dict(spec.options) if spec.codec in ("libx264", "libx265") else {}
        if spec.codec == "libx264" and spec.field_order in (2, 3):
            options.update({"flags": "+ildct+ilme", "x264-params": "tff=1" if spec.field_order == 2 else "bff=1"})
        stream = out.add_stream(spec.codec, options=options)
        cc = stream.codec_context
        if spec.sar:
            cc.sample_aspect_ratio = spec.sar
        if spec.field_order:
            cc.field_order = spec.field_order
        cc.width, cc.height, cc.pix_fmt = first.shape[1], first.shape[0], spec.pix_fmt
        cc.time_base = stream.time_base = spec.time_base
        if spec.pts is not None and len(spec.pts) > 1:
            cc.framerate = Fraction(len(spec.pts) - 1) / ((spec.pts[-1] - spec.pts[0]) * spec.time_base)
        else:
            cc.framerate = 1 / spec.time_base
        primaries, trc, matrix, rng = spec.color
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = primaries, trc, matrix, rng
        if spec.rotation:
            stream.set_display_rotation(spec.rotation)
        sws_matrix = {1: 1, 5: 5, 6: 5, 9: 9}.get(matrix)
        last = step = 0
        for sent, (rgb, ts) in enumerate(zip(itertools.chain([first], frames), pts), 1):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
                format=spec.pix_fmt, src_color_range=2, dst_colorspace=sws_matrix, dst_color_range=rng, threads=1)
            frame.pts, frame.time_base = ts, spec.time_base
            out.mux(stream.encode(frame))
            step, last = ts - last, ts
        out.mux(flush_encoder(stream, sent))
    return float((last + max(step, 1)) * spec.time_base)


def interlace(pictures: list[np.ndarray], top_first: bool = True) -> list[np.ndarray]:
    """Frames of an interlaced clip from pictures at the field rate: frame k weaves pictures 2k and
    2k + 1, the first of them in the field shown first (rows 0, 2, .. when top_first)."""
    frames = []
    for first, second in zip(pictures[0::2], pictures[1::2]):
        frame = np.array(second)
        frame[(0 if top_first else 1)::2] = first[(0 if top_first else 1)::2]
        frames.append(frame)
    return frames


def _add_extras(video: Path, path: Path, spec: ClipSpec, duration: float, tmp: Path) -> None:
    """Remux the video (stream copy) with sine-tone AAC tracks, an SRT/mov_text track, chapters, tags."""
    import imageio_ffmpeg

    args = ["-i", str(video)]
    maps = ["-map", "0:v"]
    meta_args: list[str] = []
    for k, track in enumerate(spec.audio):
        args += ["-f", "lavfi", "-i", f"sine=frequency={track.frequency}:duration={duration}"]
        maps += ["-map", f"{k + 1}:a"]
        meta_args += [f"-metadata:s:a:{k}", f"language={track.language}"]
        if track.title:
            meta_args += [f"-metadata:s:a:{k}", f"title={track.title}"]
    n_inputs = 1 + len(spec.audio)
    if spec.subtitles:
        srt = tmp / "subs.srt"
        srt.write_text("".join(f"{i + 1}\n{_srt_time(a)} --> {_srt_time(b)}\n{text}\n\n"
                               for i, (a, b, text) in enumerate(spec.subtitles)))
        args += ["-i", str(srt)]
        maps += ["-map", f"{n_inputs}:s"]
        meta_args += ["-c:s", "mov_text" if path.suffix in (".mp4", ".mov") else "srt",
                      "-metadata:s:s:0", "language=eng"]
        n_inputs += 1
    if spec.chapters or spec.metadata:
        lines = [";FFMETADATA1"] + [f"{k}={v}" for k, v in spec.metadata.items()]
        for start, end, title in spec.chapters:
            lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={int(start * 1000)}", f"END={int(end * 1000)}",
                      f"title={title}"]
        (tmp / "meta.txt").write_text("\n".join(lines) + "\n")
        args += ["-f", "ffmetadata", "-i", str(tmp / "meta.txt")]
        maps += ["-map_metadata", str(n_inputs), "-map_chapters", str(n_inputs)]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *args, *maps,
           "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", *meta_args, str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed making {path}: {result.stderr.strip()}")


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
