"""The `osdface` restorer: one-step diffusion face restoration, many faces per model pass.

Batched and deterministic: every crop of a batch goes through one VAE encode, one UNet call and one VAE
decode; the prompt codes are chosen with tensor ops; the latent is the VAE's mean (no sampled noise).
UNet and VAE in bf16/fp16 on a GPU (SDPA attention, channels_last, optional torch.compile), fp32 on the CPU;
the visual prompt in true fp32 everywhere, so its codes are the reference's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ..errors import ReelfaceError
from .base import CROP_SIZE, TrackRefs, check_crops, resolve_device, resolve_dtype
from .batch_tuner import fit_batch_size
from .osdface_model import OSDFaceModel

VAE_TILE = 256  # px; with restore.vae_tiling the VAE works on 256 px tiles of the 512 crop


@contextmanager
def _ieee_fp32_convolutions():
    """cuDNN runs fp32 convolutions in TF32 (a 10-bit mantissa) by default on recent GPUs: the visual prompt's
    codes are proven exact in fp32 only (bf16, 7 bits, moved them). Scoped to the model's calls."""
    conv = torch.backends.cudnn.conv
    saved, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = saved


class OSDFaceRestorer:
    name = "osdface"
    temporal_radius = 0
    crop_size = CROP_SIZE
    keeps_colour = False

    def __init__(self, model: OSDFaceModel, restore_cfg):
        self.device = resolve_device(restore_cfg.device)
        self.dtype = resolve_dtype(restore_cfg.dtype, self.device)
        model = model.eval().requires_grad_(False).place(self.device, self.dtype)
        self.channels_last = self.device.type == "cuda"  # faster convolutions on GPUs; slower on some CPUs
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if restore_cfg.vae_slicing:
            model.vae.enable_slicing()
        if restore_cfg.vae_tiling:
            model.vae.enable_tiling()
            model.vae.tile_sample_min_size = VAE_TILE
            model.vae.tile_latent_min_size = VAE_TILE // 2 ** (len(model.vae.config.block_out_channels) - 1)
        self.model = model
        # A fixed batch shape under torch.compile: partial batches are padded, so nothing recompiles.
        self.compiled = restore_cfg.compile
        self.forward = torch.compile(model, dynamic=False) if self.compiled else model
        self.batch_size = restore_cfg.batch_size or None  # None: fitted to memory on first use

    @classmethod
    def from_config(cls, restore_cfg) -> OSDFaceRestorer:
        from .osdface_weights import load_model

        return cls(load_model(restore_cfg), restore_cfg)

    def _input(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.to(self.device, torch.float32, non_blocking=True)  # fp32: the visual prompt's input too
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()  # not inference_mode: callers may edit the returned tensors in place
    def _pass(self, crops: torch.Tensor) -> torch.Tensor:
        n = crops.shape[0]
        if self.compiled and self.batch_size and n < self.batch_size:
            crops = torch.cat([crops, crops.new_zeros((self.batch_size - n, *crops.shape[1:]))])
        with _ieee_fp32_convolutions():
            return self.forward(self._input(crops))[:n]

    def _fit_batch_size(self) -> int:
        probe = torch.full((2, 3, 512, 512), 0.5)

        @torch.no_grad()
        def run(batch: int) -> None:  # uncompiled: fitting must not compile two extra shapes
            with _ieee_fp32_convolutions():
                self.model(self._input(probe[:batch]))

        return fit_batch_size(run, self.device)

    def _restore_chunk(self, crops: torch.Tensor) -> torch.Tensor:
        try:
            return self._pass(crops)
        except torch.OutOfMemoryError:
            if crops.shape[0] == 1:
                raise ReelfaceError("osdface: one face does not fit in GPU memory; set restore.vae_tiling=true "
                                    "and restore.vae_slicing=true, or restore.device=cpu") from None
            # Memory is shared (other actors, other processes): keep the smaller batch from now on.
            self.batch_size = max(1, crops.shape[0] // 2)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return torch.cat([self._restore_chunk(part) for part in crops.split(self.batch_size)])

    def restore(self, crops: torch.Tensor, refs: list[TrackRefs] | None = None) -> torch.Tensor:
        """(B, 3, 512, 512) in [0, 1] -> restored, same device as the input, float32. `refs` are not used."""
        check_crops(crops)
        if crops.shape[0] == 0:
            return crops.float().clone()
        if self.batch_size is None:
            self.batch_size = self._fit_batch_size()
        return torch.cat([self._restore_chunk(part).to(crops.device) for part in crops.split(self.batch_size)])


def load_restorer(restore_cfg) -> OSDFaceRestorer:
    return OSDFaceRestorer.from_config(restore_cfg)
