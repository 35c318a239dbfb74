"""The `onnx` restorer: the face restorers people already have as ONNX files (facefusion and others ship them).

Recognised from the model's inputs, each RGB NCHW in [-1, 1] in and out:
- GFPGAN 1.4, GPEN-BFR-512, RestoreFormer++: one image input `input` (or `x`), 3 x 512 x 512
- GPEN-BFR-256 / GPEN-BFR-1024: the same at 256 / 1024 (crops are resized to it and back)
- CodeFormer: the 512 image `x` (or `input`) and a scalar fidelity weight `w` (or `weight`), fed restore.fidelity
The batch axis may be fixed (batches are padded) or dynamic. Anything else is refused with what was found.
Runs on onnxruntime's CUDA provider when it is there (and the device allows it), else on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReelfaceError
from .base import CROP_SIZE, TrackRefs, check_crops

DEFAULT_BATCH = 8  # for models with a dynamic batch axis, when restore.batch_size is 0
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
IMAGE_NAMES = ("input", "x")
FIDELITY_NAMES = ("w", "weight")
FAMILIES = {  # (image side, has a fidelity input) -> the models with that signature
    (256, False): "GPEN-BFR-256",
    (512, False): "GFPGAN 1.4 / GPEN-BFR-512 / RestoreFormer++",
    (1024, False): "GPEN-BFR-1024",
    (512, True): "CodeFormer",
}
KNOWN = ("GFPGAN 1.4, GPEN-BFR-256/512/1024, RestoreFormer++ (one image input 'input' or 'x', N x 3 x S x S, "
         "S 256/512/1024) and CodeFormer (the 512 image plus a scalar 'w' or 'weight')")


@dataclass(frozen=True)
class Signature:
    family: str
    image: str  # input name
    image_type: type
    size: int  # the model's square side
    fixed_batch: int | None
    fidelity: str | None  # input name of CodeFormer's fidelity weight
    fidelity_type: type | None
    fidelity_shape: tuple[int, ...]


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _is_scalar(arg) -> bool:
    return arg.type in _NP_TYPES and all(d == 1 for d in arg.shape)


def recognise(inputs: list, path: Path) -> Signature:
    """The family of a model from its inputs (onnxruntime NodeArgs); one line naming what was found otherwise.
    A dynamic image side is taken as 512, the crops' own size."""
    images = [a for a in inputs if a.name in IMAGE_NAMES and len(a.shape) == 4 and a.type in _NP_TYPES]
    weights = [a for a in inputs if a.name in FIDELITY_NAMES and _is_scalar(a)]
    family = None
    if len(images) == 1 and len(weights) <= 1 and len(images) + len(weights) == len(inputs):
        _, channels, height, width = (_fixed(d) for d in images[0].shape)
        side = height or width or CROP_SIZE
        if channels in (3, None) and (height or side) == side and (width or side) == side:
            family = FAMILIES.get((side, bool(weights)))
    if family is None:
        found = ", ".join(f"{a.name} {list(a.shape)} {a.type}" for a in inputs)
        raise ReelfaceError(f"onnx restorer: {path} has inputs {found}, the signature of no face restorer this "
                            f"backend knows: {KNOWN}")
    image = images[0]
    weight = weights[0] if weights else None
    return Signature(family, image.name, _NP_TYPES[image.type], side, _fixed(image.shape[0]),
                     weight.name if weight else None, _NP_TYPES[weight.type] if weight else None,
                     tuple(weight.shape) if weight else ())


def default_dir() -> Path:
    from .osdface_weights import models_home

    return models_home() / "onnx"


def check_present(restore_cfg) -> Path:
    """restore.weights, or the one .onnx file in the default folder."""
    if restore_cfg.weights:
        path = Path(restore_cfg.weights).expanduser()
        if not path.is_file():
            raise ReelfaceError(f"onnx restorer: model file {path} not found (restore.weights must be an .onnx file)")
        return path
    found = sorted(default_dir().glob("*.onnx"))
    if len(found) != 1:
        what = "no .onnx file" if not found else f"{len(found)} .onnx files"
        raise ReelfaceError(f"onnx restorer: {what} in {default_dir()}; put your face restorer there "
                            "(GFPGAN, CodeFormer, GPEN-BFR or RestoreFormer++ in ONNX) "
                            "or set restore.weights=/path/model.onnx")
    return found[0]


def status_lines(restore_cfg) -> list[str]:
    """For `reelface models`: where the model file is looked for and whether it is there."""
    if restore_cfg.weights:
        where, present = restore_cfg.weights, Path(restore_cfg.weights).expanduser().is_file()
    else:
        where, present = f"{default_dir()}/*.onnx", len(list(default_dir().glob("*.onnx"))) == 1
    return [f"  {'model file':34s} {'present' if present else 'MISSING'}  ({where})"]


def _providers(device: str) -> list:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if not has_cuda:
        raise ReelfaceError(f"restore.device is '{device}' but onnxruntime has no CUDA provider: "
                            "install onnxruntime-gpu or use restore.device=cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxRestorer:
    name = "onnx"
    temporal_radius = 0
    crop_size = CROP_SIZE
    keeps_colour = False

    def __init__(self, restore_cfg):
        import onnxruntime as ort

        self.path = check_present(restore_cfg)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=_providers(restore_cfg.device))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise ReelfaceError(f"onnx restorer: cannot load {self.path} ({exc})") from None
        self.signature = recognise(self.session.get_inputs(), self.path)
        sig = self.signature
        self.feeds = {}
        if sig.fidelity:
            self.feeds[sig.fidelity] = np.full(sig.fidelity_shape, restore_cfg.fidelity, dtype=sig.fidelity_type)
        self.batch_size = sig.fixed_batch or restore_cfg.batch_size or DEFAULT_BATCH

    def _run(self, crops: torch.Tensor) -> torch.Tensor:
        sig, n = self.signature, crops.shape[0]
        x = crops.float() * 2 - 1
        if sig.size != CROP_SIZE:
            x = F.interpolate(x, size=(sig.size, sig.size), mode="bilinear", antialias=True, align_corners=False)
        if sig.fixed_batch and n < sig.fixed_batch:
            x = torch.cat([x, x.new_zeros((sig.fixed_batch - n, *x.shape[1:]))])
        feeds = {sig.image: x.numpy().astype(sig.image_type, copy=False), **self.feeds}
        y = torch.from_numpy(np.asarray(self.session.run(None, feeds)[0], dtype=np.float32))[:n]
        if tuple(y.shape[2:]) != (CROP_SIZE, CROP_SIZE):
            y = F.interpolate(y, size=(CROP_SIZE, CROP_SIZE), mode="bicubic", antialias=True, align_corners=False)
        return ((y.clamp(-1, 1) + 1) / 2).clamp(0, 1)

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None) -> torch.Tensor:
        check_crops(crops)
        if crops.shape[0] == 0:
            return crops.float().clone()
        cpu = crops.detach().cpu()
        return torch.cat([self._run(part) for part in cpu.split(self.batch_size)]).to(crops.device)
