"""dlib's face descriptor network (`dlib_face_recognition_resnet_model_v1.dat`) read from dlib's own
serialisation and run by torch.

dlib runs this ResNet on the CPU holding the Python GIL for the whole ~130 ms a face, stalling every
other thread; torch gives the same 128 numbers (to float32 rounding) in ~18 ms a face alone, ~10 in a
batch of 8 (one thread, 2-core machine), and lets go of the GIL inside its ops.

The file holds the layers of dlib's C++ network type (`anet_type` of dlib's dnn_face_recognition_ex.cpp)
but not how they are wired: tags, skips and which tag an add_prev reads are in the type, not the
file. `WIRING` writes that type out; the file gives every layer's sizes, strides, paddings and weights.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CHIP_SIZE = 150  # input_rgb_image_sized<150>


def _residual(down: bool) -> list[tuple[str, int]]:
    """dlib's `ares` / `ares_down`, from the input outwards: relu(block(x) + x), where the down-sampling
    one adds avg_pool(x) to a block that starts with a stride-2 convolution."""
    block = [("tag", 1), ("con", 0), ("affine", 0), ("relu", 0), ("con", 0), ("affine", 0)]
    if down:
        return block + [("tag", 2), ("skip", 1), ("avg_pool", 0), ("add_prev", 2), ("relu", 0)]
    return block + [("add_prev", 1), ("relu", 0)]


# alevel4 .. alevel0: ares_down first in each level but the first
_DOWNS = [False] * 3 + [True] + [False] * 3 + [True] + [False] * 2 + [True] + [False] * 2 + [True]
WIRING: list[tuple[str, int]] = (
    [("con", 0), ("affine", 0), ("relu", 0), ("max_pool", 0)]
    + [op for down in _DOWNS for op in _residual(down)]
    + [("avg_pool", 0), ("fc", 0)])  # avg_pool_everything, fc_no_bias<128>


class _Reader:
    """dlib's serialize.h formats over the file's bytes."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def int(self) -> int:
        # a control byte (0x80: negative, low 4 bits: how many bytes follow), then little-endian bytes
        control = self.data[self.at]
        size = control & 0x0F
        value = int.from_bytes(self.data[self.at + 1:self.at + 1 + size], "little")
        self.at += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        # dlib's float_details: an integer mantissa, then a power of two
        mantissa = self.int()
        return math.ldexp(mantissa, self.int())

    def bool(self) -> bool:
        value = self.data[self.at:self.at + 1]
        if value not in (b"0", b"1"):
            raise ValueError(f"not a dlib bool at byte {self.at}")
        self.at += 1
        return value == b"1"

    def str(self) -> str:
        size = self.int()
        self.at += size
        return self.data[self.at - size:self.at].decode("ascii")

    def shape(self) -> tuple[int, ...]:
        """An alias_tensor: only the shape of a slice of some params tensor."""
        self.expect(self.int(), (1,), "alias_tensor")
        return tuple(self.int() for _ in range(4))

    def tensor(self) -> np.ndarray:
        self.expect(self.int(), (2,), "tensor")
        shape = tuple(self.int() for _ in range(4))
        count = math.prod(shape)
        values = np.frombuffer(self.data, "<f4", count, self.at).reshape(shape)
        self.at += 4 * count
        return values.astype(np.float32)  # a native-order, writable copy

    def expect(self, found, allowed, what: str):
        if found not in allowed:
            raise ValueError(f"unexpected {what} version {found!r} before byte {self.at}")
        return found


@dataclass
class Layer:
    kind: str  # con | affine | relu | max_pool | avg_pool | add_prev | tag | skip | fc
    tag: int = 0  # tag, skip, add_prev: dlib's tag number
    weight: torch.Tensor | None = None  # con: filters; affine: gamma; fc: (outputs, inputs)
    bias: torch.Tensor | None = None  # con: biases; affine: beta
    window: tuple[int, int] = (0, 0)  # pools; 0: the whole image
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _read_con(r: _Reader) -> Layer:
    version = r.expect(r.str(), ("con_4", "con_5", "con_6"), "con_")
    params = r.tensor().ravel()
    r.int()  # number of filters, also in the filters' shape
    window = (r.int(), r.int())
    stride = (r.int(), r.int())
    padding = (r.int(), r.int())
    filters, biases = r.shape(), r.shape()
    for _ in range(4):
        r.float()  # learning rate and weight decay multipliers
    use_bias = r.bool() if version != "con_4" else True
    if version == "con_6" and r.bool():
        raise ValueError("con_ with a fused relu is not this network")
    size = math.prod(filters)
    weight = torch.from_numpy(params[:size].reshape(filters))
    bias = torch.from_numpy(params[size:size + math.prod(biases)]) if use_bias else None
    if weight.shape[2:] != window:
        raise ValueError(f"con_ filters {tuple(weight.shape)} are not {window}")
    return Layer("con", weight=weight, bias=bias, stride=stride, padding=padding)


def _read_affine(r: _Reader) -> Layer:
    version = r.expect(r.str(), ("affine_", "affine_2"), "affine_")
    params = r.tensor().ravel()
    gamma, beta = r.shape(), r.shape()
    r.int()  # mode: conv (per channel) or fc (per value); the shapes already say which
    if version == "affine_2" and r.bool():
        raise ValueError("a disabled affine_ layer is not this network")
    size = math.prod(gamma)
    return Layer("affine", weight=torch.from_numpy(params[:size].reshape(gamma)[0]),
                 bias=torch.from_numpy(params[size:size + math.prod(beta)].reshape(beta)[0]))


def _read_relu(r: _Reader) -> Layer:
    if r.expect(r.str(), ("relu_", "relu_2"), "relu_") == "relu_2" and r.bool():
        raise ValueError("a disabled relu_ layer is not this network")
    return Layer("relu")


def _read_pool(kind: str):
    def read(r: _Reader) -> Layer:
        r.expect(r.str(), (f"{kind}_2",), f"{kind}_")
        window = (r.int(), r.int())
        return Layer(kind, window=window, stride=(r.int(), r.int()), padding=(r.int(), r.int()))
    return read


def _read_add_prev(r: _Reader) -> Layer:
    r.expect(r.str(), ("add_prev_",), "add_prev_")
    return Layer("add_prev")


def _read_fc(r: _Reader) -> Layer:
    version = r.expect(r.str(), ("fc_2", "fc_3"), "fc_")
    outputs, inputs = r.int(), r.int()
    params = r.tensor().ravel()
    weights, _ = r.shape(), r.shape()
    if r.int() != 1:  # fc_bias_mode: FC_NO_BIAS is 1
        raise ValueError("fc_ with a bias is not this network")
    for _ in range(4):
        r.float()
    if version == "fc_3":
        r.bool()  # use_bias, moot without a bias vector
    # dlib multiplies rows of inputs by an (inputs, outputs) matrix
    weight = params[:math.prod(weights)].reshape(inputs, outputs)
    return Layer("fc", weight=torch.from_numpy(np.ascontiguousarray(weight.T)))


_READERS = {"con": _read_con, "affine": _read_affine, "relu": _read_relu, "max_pool": _read_pool("max_pool"),
            "avg_pool": _read_pool("avg_pool"), "add_prev": _read_add_prev, "fc": _read_fc}


def _read_add_layer_tail(r: _Reader, version: int, on_input: bool) -> None:
    """What an add_layer keeps for training after its layer: flags, gradients, a cached output."""
    for _ in range(3):
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if on_input:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # sample expansion factor
    elif version == 2:
        r.tensor()  # params_grad


def read_network(path: str | Path) -> tuple[np.ndarray, list[Layer]]:
    """(per-channel RGB means of the input layer, layers from the input outwards) of dlib's file."""
    r = _Reader(Path(path).read_bytes())
    r.expect(r.int(), (1,), "add_loss_layer")
    r.expect(r.str(), ("loss_metric_", "loss_metric_2"), "loss_metric_")
    r.float(), r.float()  # margin and distance threshold: training only
    # every wrapper writes its version and then its inner network before its own layer: all the
    # versions come first, outermost first
    versions = [r.int() for _ in WIRING][::-1]
    r.expect(r.str(), ("input_rgb_image_sized",), "input layer")
    means = np.array([r.float() for _ in range(3)], np.float32)
    if (r.int(), r.int()) != (CHIP_SIZE, CHIP_SIZE):
        raise ValueError(f"the network does not take {CHIP_SIZE}x{CHIP_SIZE} chips")
    layers = []
    for k, ((kind, tag), version) in enumerate(zip(WIRING, versions)):
        if kind in ("tag", "skip"):
            r.expect(version, (1,), kind)
            layers.append(Layer(kind, tag=tag))
            continue
        r.expect(version, (2, 3) if k == 0 else (1, 2), "add_layer")
        layer = _READERS[kind](r)
        layer.tag = tag
        _read_add_layer_tail(r, version, on_input=k == 0)
        layers.append(layer)
    if r.at != len(r.data):
        raise ValueError(f"{len(r.data) - r.at} bytes left after the network")
    return means, layers


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev of tensors of different sizes: the larger shape, each one top-left, zeros
    elsewhere (a down-sampling block adds 64 channels to 32; on 8x8 its stride-2 convolution gives
    3x3 where the pooled skip is 4x4)."""
    if a.shape == b.shape:
        return a + b
    total = a.new_zeros([max(m, n) for m, n in zip(a.shape, b.shape)])
    total[tuple(slice(0, n) for n in a.shape)] = a
    total[tuple(slice(0, n) for n in b.shape)] += b
    return total


def _pool(layer: Layer, x: torch.Tensor) -> torch.Tensor:
    if layer.window == (0, 0):  # avg_pool_everything
        return x.mean((2, 3), keepdim=True)
    if layer.kind == "max_pool":
        return F.max_pool2d(x, layer.window, layer.stride, layer.padding)
    # dlib averages over the part of the window inside the image
    return F.avg_pool2d(x, layer.window, layer.stride, layer.padding, count_include_pad=False)


@contextmanager
def _one_torch_thread():
    """torch ops of the calling thread on one core, for the time of the block.

    The network runs beside busy threads (the decode thread while tracking, the restorer while the
    report is measured): with torch's default of one thread a core, its threads meet at the end of every
    op, and the one whose core another thread holds keeps the others waiting. Measured on 2 loaded
    cores, describing one face at a time beside a pure-Python loop: 17 faces/s on one thread, 0.9 on
    two. At these sizes (<= 16 chips of 150x150) a second thread gains little anyway. With torch's OpenMP backend the count is
    each thread's own (other threads keep theirs); restoring it leaves the process's setting as it was."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class DlibFaceNet:
    """dlib's face descriptor network in torch: `(N, 150, 150, 3)` uint8 RGB chips cut as
    `dlib.get_face_chips` cuts them -> `(N, 128)` float32 descriptors, as dlib's
    `compute_face_descriptor` gives them (not normalised)."""

    def __init__(self, path: str | Path):
        means, self.layers = read_network(path)
        self.means = torch.from_numpy(means)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be {CHIP_SIZE}x{CHIP_SIZE} RGB, got {chips.shape}")
        with torch.inference_mode(), _one_torch_thread():
            # input_rgb_image: each channel less its mean over the training set, over 256
            x = ((torch.from_numpy(chips).float() - self.means) / 256.0).permute(0, 3, 1, 2)
            tags: dict[int, torch.Tensor] = {}
            for layer in self.layers:
                x = self._apply(layer, x, tags)
            return x.numpy()

    @staticmethod
    def _apply(layer: Layer, x: torch.Tensor, tags: dict[int, torch.Tensor]) -> torch.Tensor:
        kind = layer.kind
        if kind == "con":
            return F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
        if kind == "affine":
            return torch.addcmul(layer.bias, x, layer.weight)
        if kind == "relu":
            return F.relu(x)
        if kind in ("max_pool", "avg_pool"):
            return _pool(layer, x)
        if kind == "tag":
            tags[layer.tag] = x
            return x
        if kind == "skip":
            return tags[layer.tag]
        if kind == "add_prev":
            return _add_padded(x, tags[layer.tag])
        if kind == "fc":
            return x.flatten(1) @ layer.weight.T
        raise ValueError(f"no such layer: {kind}")
