"""The `onnx` restorer: a user's face restorer exported to ONNX (GFPGAN, CodeFormer, GPEN style).

Such models take RGB NCHW in [-1, 1] and give the same back. The image input is found by its rank (4); its
batch may be fixed (batches are padded) or dynamic, its size fixed (crops are resized to it and back) or
dynamic (512). A second scalar input, as in CodeFormer's fidelity weight `w`, gets restore.fidelity.
Runs on onnxruntime's CUDA provider when it is there (and the device allows it), else on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReelfaceError
from .base import CROP_SIZE, TrackRefs, check_crops

DEFAULT_BATCH = 8  # for models with a dynamic batch axis, when restore.batch_size is 0
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


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
        raise ReelfaceError(f"onnx restorer: {what} in {default_dir()}; put your 512x512 face restorer there "
                            "(GFPGAN/CodeFormer/GPEN ONNX export) or set restore.weights=/path/model.onnx")
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

    def __init__(self, restore_cfg):
        import onnxruntime as ort

        self.path = check_present(restore_cfg)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=_providers(restore_cfg.device))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise ReelfaceError(f"onnx restorer: cannot load {self.path} ({exc})") from None
        images = [i for i in self.session.get_inputs() if len(i.shape) == 4]
        if len(images) != 1 or images[0].type not in _NP_TYPES:
            raise ReelfaceError(f"onnx restorer: {self.path} needs exactly one float NCHW image input, "
                                f"has {[(i.name, i.shape, i.type) for i in self.session.get_inputs()]}")
        image = images[0]
        self.input_name, self.input_type = image.name, _NP_TYPES[image.type]
        self.feeds = {}
        for extra in self.session.get_inputs():
            if extra.name == image.name:
                continue
            if extra.type not in _NP_TYPES or any(d not in (1,) for d in extra.shape):
                raise ReelfaceError(f"onnx restorer: {self.path} has an input '{extra.name}' {extra.shape} that is "
                                    "neither the image nor a scalar (such as CodeFormer's fidelity weight w)")
            self.feeds[extra.name] = np.full(extra.shape, restore_cfg.fidelity, dtype=_NP_TYPES[extra.type])
        batch, _, height, width = image.shape
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.batch_size = self.fixed_batch or restore_cfg.batch_size or DEFAULT_BATCH
        self.size = tuple(d if isinstance(d, int) and d > 0 else CROP_SIZE for d in (height, width))

    def _run(self, crops: torch.Tensor) -> torch.Tensor:
        n = crops.shape[0]
        x = crops.float() * 2 - 1
        if self.size != (CROP_SIZE, CROP_SIZE):
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        if self.fixed_batch and n < self.fixed_batch:
            x = torch.cat([x, x.new_zeros((self.fixed_batch - n, *x.shape[1:]))])
        feeds = {self.input_name: x.numpy().astype(self.input_type, copy=False), **self.feeds}
        y = torch.from_numpy(np.asarray(self.session.run(None, feeds)[0], dtype=np.float32))[:n]
        if tuple(y.shape[2:]) != (CROP_SIZE, CROP_SIZE):
            y = F.interpolate(y, size=(CROP_SIZE, CROP_SIZE), mode="bicubic", align_corners=False)
        return ((y.clamp(-1, 1) + 1) / 2).clamp(0, 1)

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None) -> torch.Tensor:
        check_crops(crops)
        if crops.shape[0] == 0:
            return crops.float().clone()
        cpu = crops.detach().cpu()
        return torch.cat([self._run(part) for part in cpu.split(self.batch_size)]).to(crops.device)
