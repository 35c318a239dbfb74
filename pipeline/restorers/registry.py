"""Restorer backends by name: build one from the config, describe their weights, download them.

Backends are imported only when used, so `identity` and `fusion` never import diffusers and a missing
optional backend breaks only itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import ReelfaceError
from .base import Restorer


@dataclass(frozen=True)
class Backend:
    name: str
    factory: str  # "module:attribute", called with the restore config section
    summary: str
    weights: str | None = None  # module with check_present(restore_cfg) and status_lines(restore_cfg)
    needs_faces: bool = True  # False: changes no pixel, so a run skips detection, tracks and references
    load_to_check: bool = False  # True: loading is quick and the only full check of the weights file
    reference_crops: str | None = None  # "module:attribute": how many reference crops it uses (None: none)


BACKENDS = {b.name: b for b in (
    Backend("fusion", "pipeline.restorers.fusion:FusionRestorer",
            "multi-frame fusion along each track; no weights, nothing invented"),
    Backend("osdface", "pipeline.restorers.osdface:load_restorer",
            "one-step diffusion (OSDFace weights on Stable Diffusion 2.1-base)",
            weights="pipeline.restorers.osdface_weights"),
    Backend("onnx", "pipeline.restorers.onnx:OnnxRestorer",
            "your face restorer in ONNX: GFPGAN 1.4, CodeFormer, GPEN-BFR 256/512/1024, RestoreFormer++",
            weights="pipeline.restorers.onnx", load_to_check=True),
    Backend("identity", "pipeline.restorers.identity:IdentityRestorer",
            "returns the input (baseline for benchmarks and tests)", needs_faces=False),
)}


def _resolve(backend: Backend, target: str | None = None) -> Any:
    """The attribute named by `target` ("module:attribute"), by default the backend's factory."""
    module_name, attribute = (target or backend.factory).split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ReelfaceError(f"restorer '{backend.name}' is not available in this installation") from None
        raise ReelfaceError(f"restorer '{backend.name}' needs the package '{exc.name}': "
                            "reinstall reelface (bash scripts/setup.sh)") from None
    return getattr(module, attribute)


def _backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ReelfaceError(f"unknown restorer '{name}' (known: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def get_restorer(restore_cfg) -> Restorer:
    """The restorer named by restore_cfg.restorer, ready to run."""
    return _resolve(_backend(restore_cfg.restorer))(restore_cfg)


def check_restorer(restore_cfg) -> None:
    """Fail now, with the fix, if the named restorer is unknown or its weights are missing (or, where
    loading is quick, do not load): a long job must not find that out after hours of detection."""
    backend = _backend(restore_cfg.restorer)
    if backend.weights:
        importlib.import_module(backend.weights).check_present(restore_cfg)
    if backend.load_to_check:
        get_restorer(restore_cfg)


def needs_faces(restore_cfg) -> bool:
    """Whether a run with this restorer needs faces found at all (the identity restorer does not: its
    run is the pure video path, the baseline that overhead is measured against)."""
    return _backend(restore_cfg.restorer).needs_faces


def reference_crops(restore_cfg) -> int:
    """How many reference crops per track the restorer uses: a run stores only those."""
    backend = _backend(restore_cfg.restorer)
    return int(_resolve(backend, backend.reference_crops)) if backend.reference_crops else 0


def _weights_lines(backend: Backend, restore_cfg) -> list[str]:
    if backend.weights:
        return importlib.import_module(backend.weights).status_lines(restore_cfg)
    return ["  needs no weights"]


def describe_models(cfg) -> str:
    """What `reelface models` prints: each backend, where its weights are looked for, present or not.

    Weight locations depend on restore.weights / restore.base_model, which belong to the configured
    restorer; the other backends are shown with their default places.
    """
    lines = []
    for name, backend in BACKENDS.items():
        restore_cfg = cfg.restore if cfg.restore.restorer == name else _with_defaults(cfg.restore)
        chosen = "  (configured)" if cfg.restore.restorer == name else ""
        lines.append(f"{name}: {backend.summary}{chosen}")
        lines.extend(_weights_lines(backend, restore_cfg))
    return "\n".join(lines)


def _with_defaults(restore_cfg):
    import dataclasses

    return dataclasses.replace(restore_cfg, weights=None)


def download_model(name: str, cfg) -> str:
    """Fetch what can be fetched for backend `name`; returns what was done and what is left to do."""
    _backend(name)
    restore_cfg = cfg.restore if cfg.restore.restorer == name else _with_defaults(cfg.restore)
    if name == "osdface":
        from .osdface_weights import download

        return download(restore_cfg)
    if name == "onnx":
        from .onnx import default_dir

        raise ReelfaceError(f"the onnx restorer runs your own model file: export your face restorer to ONNX and put "
                            f"it in {default_dir()} or set restore.weights=/path/model.onnx")
    return f"{name}: needs no weights"
