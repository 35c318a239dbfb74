"""The restorer protocol shared by every backend, and the few helpers they all need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import ReelfaceError

CROP_SIZE = 512


@dataclass
class TrackRefs:
    """The references of one track/person: aligned crops (K, 3, 512, 512) in [0, 1] and an identity embedding."""

    crops: torch.Tensor
    embedding: torch.Tensor | None = None


@runtime_checkable
class Restorer(Protocol):
    name: str
    # the crop size the restorer needs (e.g. 512 for models trained on FFHQ-512); None: any size, so each
    # face is cropped near its own resolution (see process.crop_geometry)
    crop_size: int | None
    # True when the output's low frequencies are the input's own (averaged, not generated): no colour
    # match is needed after it
    keeps_colour: bool
    # 0 for per-frame restorers; r > 0: the caller passes whole ordered runs of one track and keeps only
    # the outputs whose r neighbours on each side were present.
    temporal_radius: int

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> the same shape in [0, 1]; same input, same output.

        A restorer with crop_size None is also passed `scale=`: how many crop pixels one source pixel
        became in these crops (its crops follow each face's own resolution, so their pixels mean
        different things from face to face)."""
        ...


# Crops and restorer outputs are kept on a grid of 1/GRID steps of [0, 1]: finer than any source the face
# path reads (every 8-bit level is on it, since 65535 = 255 * 257; a 10-bit level is 64 steps) and than a
# bf16 model sees, and exactly what a uint16 holds, so they cross a process boundary (Ray) as uint16
# without changing a bit: the Ray and local executors restore the same numbers.
GRID = 65535


def on_grid(batch: torch.Tensor) -> torch.Tensor:
    """The nearest values on the 1/GRID grid (a new tensor)."""
    return batch.mul(GRID).round_().div_(GRID)


def _snap(values: np.ndarray) -> np.ndarray:
    """float32 values in [0, 1] put on the grid in place: on_grid's float32 arithmetic (* GRID, round half to
    even, / GRID) in numpy, the same numbers without torch's temporaries."""
    values *= np.float32(GRID)
    np.rint(values, out=values)
    values /= np.float32(GRID)
    return values


def crops_to_tensor(crops) -> torch.Tensor:
    """RGB crops (N, H, W, 3) in 0..255 (uint8, or float at the source's precision), an array or a list,
    -> float (N, 3, H, W) in [0, 1] on the grid: the one way from the CPU side to the model side."""
    # a new array (float crops are the caller's), viewed as (N, 3, H, W)
    return torch.from_numpy(_snap(np.divide(np.asarray(crops), np.float32(255), dtype=np.float32))).permute(0, 3, 1, 2)


def crops_on_grid(crops, out: np.ndarray | None = None) -> np.ndarray:
    """tensor_to_crops(crops_to_tensor(crops)) without the tensors: float32 crops (N, H, W, 3) in 0..255,
    clamped, on the grid (the same numbers), new or in `out` (which may be `crops` itself)."""
    values = np.divide(np.asarray(crops), np.float32(255), out=out, dtype=np.float32)
    _snap(np.clip(values, 0, 1, out=values))
    values *= np.float32(255)
    return values


def restorer_output(batch: torch.Tensor) -> torch.Tensor:
    """All of a restorer's output that the face path keeps: [0, 1], on the grid, float32 on the CPU."""
    return on_grid(batch.detach().float().clamp(0, 1)).cpu()


def tensor_to_crops(batch: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) from a restorer -> float32 (N, H, W, 3) in 0..255 on the CPU, not rounded to levels:
    blending goes on in float."""
    # restorer_output's arithmetic in numpy, in place in one new (N, H, W, 3) array
    values = batch.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    crops = _snap(np.clip(values, 0, 1, out=np.empty(values.shape, np.float32)))
    crops *= np.float32(255)
    return crops


def check_crops(crops: torch.Tensor, size: int | None = CROP_SIZE) -> None:
    """Refuse what the restorer cannot take, with the shape it got (a caller bug, stated plainly).
    `size` None: square crops of any size (restorers whose crop follows the face's own resolution)."""
    square = isinstance(crops, torch.Tensor) and crops.ndim == 4 and crops.shape[1] == 3 and crops.shape[2] == crops.shape[3]
    if not square or (size is not None and crops.shape[2] != size):
        got = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
        want = f"(B, 3, {size}, {size})" if size is not None else "(B, 3, S, S)"
        raise ReelfaceError(f"restorers take face crops shaped {want}, got {got}")
    if not crops.is_floating_point():
        raise ReelfaceError(f"restorers take float crops in [0, 1], got dtype {crops.dtype}")


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first GPU when there is one, else the CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ReelfaceError(f"restore.device '{name}' is not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReelfaceError(f"restore.device is '{name}' but torch sees no GPU: use restore.device=cpu or auto")
    return device


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on a GPU that has it (else fp16), fp32 on the CPU (half precision is slow there)."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in _DTYPES:
        raise ReelfaceError(f"restore.dtype '{name}' is unknown (auto, {', '.join(_DTYPES)})")
    return _DTYPES[name]
