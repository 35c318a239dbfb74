"""Restore the faces of a run of decoded frames in place: align, restore, blend, paste back.

`restore_frames` is what every executor calls per chunk (with the chunk's context frames). All of its
temporal decisions are made from the whole track (transforms smoothed over the track, windows cut at
the track's own ends), so a frame comes out the same whatever chunk it was decoded in, as long as the
chunk carries `context_frames_needed(restorer, cfg.blend.temporal)` context frames on each side.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import align, blend
from .picture import Geometry
from .stabilise import RADIUS as STABILISE_RADIUS, stabilise
from .restorers.base import crops_on_grid, crops_to_tensor, tensor_to_crops

MASK_SMOOTH_SIGMA = 1.5  # frames; transforms (hence crops and paste masks) smoothed along each track
DEFAULT_BATCH = 8  # crops per restorer call when restore.batch_size is 0 (auto) on the CPU
MIN_RUN = 32  # crops a temporal restorer keeps per call, beyond its 2r context crops
# crop pixels a temporal restorer gets per call when they make more than MIN_RUN crops: the next call
# computes the 2r context crops again (16% of hamilton's crops at MIN_RUN alone, 1.5% at this budget)
CALL_PIXELS = 8 << 20
# Restorers that take any crop size get each face near its own resolution, framed wider than FFHQ so
# the paste mask covers the whole head (hair line, ears, jaw) and not only the inner face.
# crop pixels per frame pixel: since fusion's deconvolution follows the crop's scale, 1.5 restores as well
# as 2 (tuning grid: +1.55 dB over the baseline either way) at 0.56 of the pixels; 1.0 lost 0.5 dB
CROP_UPSAMPLE = 1.5
HEAD_ZOOM = 1.35  # the crop shows this many times the FFHQ framing
# px; small faces cost little even enlarged 2x or more, and lose less to the warps in and out that way
# (48 px faces of the tuning photos: +0.05 dB over 1.5x)
MIN_CROP = 176
MAX_CROP = 640  # px; a bigger face is restored at a little less than its resolution (bounds its cost)


def context_frames_needed(restorer, stabilise_strength: float) -> int:
    """Context frames a chunk needs on each side for chunk-independent output: the restorer's window,
    then the stabiliser's (when it is on)."""
    return int(getattr(restorer, "temporal_radius", 0)) + (STABILISE_RADIUS if stabilise_strength > 0 else 0)


@dataclass
class _Run:
    """Consecutive frames of one track present in this batch of frames."""

    track: object
    frame_indices: list[int] = field(default_factory=list)
    transforms: list[np.ndarray] = field(default_factory=list)
    zoom: float = 1.0  # the crops show this many times the FFHQ framing


def track_transforms(track) -> np.ndarray:
    """Crop transforms (N,2,3) for every entry of a track, smoothed over time within each unbroken run."""
    transforms = align.estimate_transforms(np.asarray(track.landmarks, np.float32))
    frames = np.asarray(track.frames)
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    pieces = [align.smooth_transforms(part, MASK_SMOOTH_SIGMA) for part in np.split(transforms, breaks)]
    return np.concatenate(pieces) if pieces else transforms


def crop_geometry(transforms: np.ndarray, restorer) -> tuple[int, float]:
    """(size, zoom) of a run's crops: the restorer's own size and the FFHQ framing when it needs them, else
    about CROP_UPSAMPLE crop pixels per frame pixel over HEAD_ZOOM times the FFHQ framing, so a face costs
    what its resolution calls for and its fine detail survives the warps in and out."""
    fixed = getattr(restorer, "crop_size", align.CROP_SIZE)
    if fixed is not None:
        return int(fixed), 1.0
    native = HEAD_ZOOM * align.CROP_SIZE / float(np.median(align.transform_scale(transforms)))
    return int(np.clip(np.ceil(CROP_UPSAMPLE * native / 16) * 16, MIN_CROP, MAX_CROP)), HEAD_ZOOM


def _runs(frames_by_index: dict, trackset) -> list[_Run]:
    runs: list[_Run] = []
    for track in trackset.tracks:
        transforms = None
        current: _Run | None = None
        for k, index in enumerate(track.frames):
            if index not in frames_by_index:
                continue
            if transforms is None:
                transforms = track_transforms(track)
            if current is None or index != current.frame_indices[-1] + 1:
                current = _Run(track)
                runs.append(current)
            current.frame_indices.append(index)
            current.transforms.append(transforms[k])
    return runs


def restore_run(crops: np.ndarray, track_refs, restorer, batch_size: int, scale: float) -> list[np.ndarray]:
    """Restored crops (float32 0..255) of one run, in order; `scale` is how many crop pixels a source pixel
    became (what a restorer that takes any crop size is told, see restorers.base.Restorer).

    Temporal restorers get overlapping windows: each call carries r crops of context on each side and
    only the outputs whose whole window was present are kept (at the run's ends there is no more data,
    so the truncated windows there are what the track has).
    """
    radius = int(getattr(restorer, "temporal_radius", 0))
    keep = max(batch_size, MIN_RUN, CALL_PIXELS // (crops.shape[1] * crops.shape[2])) if radius else max(batch_size, 1)
    told = {"scale": scale} if getattr(restorer, "crop_size", align.CROP_SIZE) is None else {}
    # equal parts, so the last call is never a sliver (a temporal window there would lack neighbours), and as
    # few as keep about `keep` crops each beyond their context (none holds more than keep + 3r): a run of
    # keep + 2r crops is one call, where two would restore 2r context crops only to drop them
    parts = max(1, -(-(len(crops) - 2 * radius) // keep))
    bounds = np.linspace(0, len(crops), parts + 1).round().astype(int)
    out: list[np.ndarray] = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        lo, hi = max(0, start - radius), min(len(crops), stop + radius)
        refs = [track_refs] * (hi - lo) if track_refs is not None else None
        restored = tensor_to_crops(restorer.restore(crops_to_tensor(crops[lo:hi]), refs, **told))
        out.extend(restored[start - lo: stop - lo])
    return out


IDENTITY_SAMPLES_PER_RUN = 3  # crops per run whose identity is measured for the report (2 faces described each)


def _crop_face(size: int, zoom: float):
    """The template face inside a crop, as a detection (for embedders that take boxes)."""
    from tracking.faces import Face

    box = align.to_crop(np.array([[96, 112], [416, 480]], np.float32), size, zoom).ravel()
    return Face(box=box, landmarks=align.template(size, zoom), score=1.0)


def temporal_errors(crops) -> list[float]:
    """Mean squared change between consecutive crops inside the face mask (x1000 on a 0..1 scale)."""
    if len(crops) < 2:
        return []
    core = (align.crop_mask(crops[0].shape[0]) > 0.5).view(np.uint8)
    scale = 1000.0 / 255.0 ** 2 / cv2.countNonZero(core)
    # one OpenCV pass a pair (squares summed over the mask and the channels, in float64): gathering the
    # mask's pixels with numpy cost 14 times as much, for report numbers only
    return [scale * cv2.norm(np.asarray(a, np.float32), np.asarray(b, np.float32), cv2.NORM_L2SQR, core)
            for a, b in zip(crops[:-1], crops[1:])]


def identity_similarities(embedder, target: np.ndarray, zoom: float, crops: np.ndarray,
                          restored: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Cosine of IDENTITY_SAMPLES_PER_RUN sampled crops to the track's identity, before and after."""
    face = _crop_face(crops.shape[1], zoom)
    picks = np.linspace(0, len(crops) - 1, min(len(crops), IDENTITY_SAMPLES_PER_RUN)).round().astype(int)
    pictures = [crops[k] for k in picks] + [restored[k] for k in picks]
    # one network call for all of them: a batch costs the network less a face than one face at a time
    chips = [chip for img in pictures for chip in embedder.align(np.clip(img, 0, 255).astype(np.uint8), [face])]
    similarities = (embedder.describe(chips) @ target / max(np.linalg.norm(target), 1e-9)).tolist()
    return similarities[:len(picks)], similarities[len(picks):]


def _record(stats: dict, embedder, run: _Run, crops: np.ndarray, restored: list[np.ndarray],
            measured: range | None) -> None:
    """Report numbers of one run: temporal error before/after and identity similarity to the track
    before/after (sampled from the run's frames in `measured`; None: all)."""
    from .report import TrackStats

    entry = stats.setdefault(run.track.track_id, TrackStats(run.track.track_id))
    entry.frames.extend(run.frame_indices)
    entry.temporal_before.extend(temporal_errors(crops))
    entry.temporal_after.extend(temporal_errors(restored))
    target = getattr(run.track, "embedding", None)
    own = [k for k, index in enumerate(run.frame_indices) if measured is None or index in measured]
    if embedder is None or target is None or not own:
        return
    # one slice: a chunk's own frames are consecutive
    before, after = identity_similarities(embedder, target, run.zoom, crops[own[0]:own[-1] + 1],
                                          restored[own[0]:own[-1] + 1])
    entry.identity_before.extend(before)
    entry.identity_after.extend(after)


def restore_frames(frames: list, trackset, refs: dict | None, restorer, cfg, stats: dict | None = None,
                   embedder=None, measured: range | None = None, on_final=None) -> None:
    """Restore every tracked face in `frames` (pipeline.video.Frame objects) in their native planes.

    Each frame's pictures (`Frame.views()`: the frame, or each field of an interlaced one, so moving
    faces never mix two instants) go through the face path one pass per picture. When `stats` (a dict)
    is given it collects report.TrackStats per track from the first pass (identity needs `embedder`,
    e.g. tracking.embedders.get_embedder(cfg), and the tracks' embeddings). `measured`: the frames whose
    identity is sampled, e.g. a chunk's own (its context frames are measured by the chunks that own them,
    so a run wholly in the context, such as a track ending at a cut on the chunk border, costs no
    embeddings); None: all. `on_final(frame)`, when given, is called with each frame in order as soon as
    it and every frame before it are finished (from the face path's threads, one call at a time), so a
    caller can encode them while later faces are still being restored."""
    passes = list(zip(*(frame.views() for frame in frames)))
    for k, views in enumerate(passes):
        # a frame is final only after its last picture's pass
        release = (lambda position: on_final(frames[position])) if on_final and k == len(passes) - 1 else None
        _restore_pictures(list(views), trackset, refs, restorer, cfg, stats if k == 0 else None, embedder, measured,
                          release)


def _restore_pictures(frames: list, trackset, refs: dict | None, restorer, cfg, stats: dict | None,
                      embedder, measured: range | None, on_final=None) -> None:
    """Runs one after another through three threads: one crops run k+2 while this one restores run k+1 and
    the third stabilises, measures, blends and pastes run k (the restorer is called from this thread only,
    in run order; everything before and after it follows run order too, so the output does not depend on
    the timing). Runs are taken in the order they start, so the pictures become final from the first
    on: `on_final(position)` is told each one's position in `frames`, in order, as soon as it is."""
    frames_by_index = {frame.index: frame for frame in frames}
    batch_size = cfg.restore.batch_size or DEFAULT_BATCH
    changes: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}  # (paste order, change, transform)
    # a restorer whose low frequencies are the input's own (averaged) needs no colour match: it would
    # only put the input's low-frequency noise back
    color_match = cfg.blend.color_match and not getattr(restorer, "keeps_colour", False)
    runs = _runs(frames_by_index, trackset)
    # a picture's faces are pasted in track order whatever order their runs finish in (the same sums)
    paste_order = {id(run): k for k, run in enumerate(runs)}
    runs.sort(key=lambda run: run.frame_indices[0])
    # a frame is pasted as soon as the last run through it is blended: only frames that still wait
    # for another face hold their changes, not the whole chunk
    waiting = collections.Counter(index for run in runs for index in run.frame_indices)
    released = 0  # frames[:released] are final and were told

    def release() -> None:
        nonlocal released
        while on_final and released < len(frames) and not waiting[frames[released].index]:
            on_final(released)
            released += 1

    def finish(run: _Run, transforms: np.ndarray, crops: np.ndarray, restored: list[np.ndarray]) -> None:
        restored = stabilise(list(crops), restored, cfg.blend.temporal)
        if stats is not None:
            _record(stats, embedder, run, crops, restored, measured)
        for k, index in enumerate(run.frame_indices):
            change = blend.face_change(restored[k], crops[k], cfg.blend.strength, color_match)
            changes.setdefault(index, []).append((paste_order[id(run)], change, transforms[k]))
            waiting[index] -= 1
            if not waiting[index]:
                frame = frames_by_index[index]
                faces = sorted(changes.pop(index), key=lambda face: face[0])
                pasted = blend.paste_changes(frame.geometry, [face[1:] for face in faces], cfg.blend.feather)
                if pasted is not None:
                    frame.paste(*pasted)
        release()

    def cut(run: _Run) -> tuple[np.ndarray, np.ndarray, float]:
        """A run's crop transforms, its crops and how many crop pixels a source pixel became."""
        transforms = np.stack(run.transforms)
        size, run.zoom = crop_geometry(transforms, restorer)
        transforms = align.crop_transforms(transforms, size, run.zoom)
        # on the restorer's grid from the start: the restorer and the stabiliser see the same numbers, so the
        # stabiliser finds the flows fusion computed between them (crop_flow's cache)
        crops = np.empty((len(run.frame_indices), size, size, 3), np.float32)  # filled in place: no copies
        for k, i in enumerate(run.frame_indices):
            frames_by_index[i].face_crops(transforms[k:k + 1], size, crops[k:k + 1])
        crops = crops_on_grid(crops, crops)
        return transforms, crops, float(np.median(align.transform_scale(transforms)))

    # Three threads, each taking the runs in order: the next run is cut while this one is restored (cutting
    # on this thread left the restorer's cores idle), and the previous one is finished on the third. At most
    # three runs' crops are held (bounded memory); a frame is pasted only once every run through it is
    # finished, so never while one of them is still to be cut.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cut") as cutter, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="blend") as finisher:
        release()  # frames before the first face
        pending: Future | None = None
        upcoming = cutter.submit(cut, runs[0]) if runs else None
        for k, run in enumerate(runs):
            transforms, crops, scale = upcoming.result()
            if k + 1 < len(runs):
                upcoming = cutter.submit(cut, runs[k + 1])
            track_refs = refs.get(run.track.track_id) if refs else None
            restored = restore_run(crops, track_refs, restorer, batch_size, scale)
            if pending is not None:
                pending.result()
            pending = finisher.submit(finish, run, transforms, crops, restored)
        if pending is not None:
            pending.result()


class ArrayFrame:
    """A frame held as an 8-bit RGB array in display space, its own one picture, with the face path's
    `.index`, `.views()`, `.geometry`, `.face_crops` and `.paste` of pipeline.video's Frame and FrameView.

    For evaluation on generated clips and for tests: restore_frames runs on it without any video I/O.
    """

    def __init__(self, index: int, rgb: np.ndarray):
        self.index = index
        self.rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = self.rgb.shape[:2]
        self.geometry = Geometry(shape=(h, w), to_display=np.eye(2, 3), display_shape=(h, w))

    def views(self) -> list["ArrayFrame"]:
        return [self]

    def face_crops(self, transforms: np.ndarray, size: int = align.CROP_SIZE,
                   out: np.ndarray | None = None) -> np.ndarray:
        return align.warp_faces(self.rgb.astype(np.float32), transforms, size, out)

    def paste(self, delta: np.ndarray, at: tuple[int, int] = (0, 0)) -> None:
        (top, left), (h, w) = at, delta.shape[:2]
        rgb = self.rgb.copy()
        rgb[top:top + h, left:left + w] = np.clip(np.rint(rgb[top:top + h, left:left + w] + delta), 0, 255)
        self.rgb = rgb
