"""Read tensors out of PyTorch checkpoints without running code from them.

The published OSDFace files are pickles: `embedding_change_weights.pth` a plain state_dict, `associate_2.ckpt`
a PyTorch Lightning checkpoint whose extras (hyper-parameters, callbacks) may name classes from packages
we do not have (omegaconf, lightning). We first try torch's safe `weights_only` loader; when an extra
names a class it refuses, we unpickle again with a loader that rebuilds tensors and plain containers
and turns every other class into an inert placeholder, so nothing from the file is ever called.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import torch

from ..errors import ReelfaceError


class _Placeholder:
    """Stands for an object of a class the checkpoint names but we do not need; accepts any state."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):  # dict subclasses are rebuilt with SETITEMS
        pass

    def append(self, value):  # list subclasses are rebuilt with APPENDS
        pass

    def extend(self, values):
        pass


_TORCH_NAMES = {"Size", "device", "dtype"}


def _allowed(module: str, name: str) -> bool:
    if module in ("torch._utils", "torch.storage") or (module == "torch" and (name.endswith("Storage") or name in _TORCH_NAMES)):
        return True
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return True
    if module == "collections" and name in ("OrderedDict", "defaultdict"):
        return True
    if module == "copyreg" and name == "_reconstructor":
        return True  # object.__new__(Placeholder): creates nothing else
    if module == "builtins" and name in ("object", "set", "frozenset", "slice", "complex"):
        return True
    return module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy") and name in (
        "scalar", "_reconstruct", "dtype", "ndarray")


class _TensorOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return super().find_class(module, name) if _allowed(module, name) else _Placeholder


_TENSOR_ONLY = SimpleNamespace(Unpickler=_TensorOnlyUnpickler, load=pickle.load, __name__="tensor_only_pickle")


def load_tensors(path: Path) -> dict:
    """The checkpoint's top-level object with its tensors, on the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # an extra that names a class: read again below without calling anything from the file
    except (RuntimeError, OSError, EOFError) as exc:
        raise ReelfaceError(f"{path} is not a readable PyTorch checkpoint ({exc}): download it again") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TENSOR_ONLY)
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged or foreign file
        raise ReelfaceError(f"{path} is not a readable PyTorch checkpoint ({exc}): download it again") from None
