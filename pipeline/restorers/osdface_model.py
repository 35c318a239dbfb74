"""The OSDFace network: one UNet step in the Stable Diffusion 2.1-base latent space, prompted by the face itself.

crop -> VAE latent mean z (no sampling: video needs the same output for the same input)
     -> eps = UNet(z, t=399, prompt = VisualPrompt(crop))
     -> x0 = (z - sqrt(1 - a) eps) / sqrt(a), a = alphas_cumprod[399] of the DDIM scheduler
     -> VAE decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import nn

from .vq_prompt import VisualPrompt, VQEncoderConfig


@dataclass(frozen=True)
class OSDFaceSpec:
    """What the weights folder does not say about the model; defaults are the published OSDFace."""

    vq_encoder: VQEncoderConfig = field(default_factory=VQEncoderConfig)
    # The reference merges its LoRA at its command line's lora_alpha / lora_rank whatever rank the file has;
    # a file that stores its own alpha is merged at that alpha / the file's rank instead (lora.merge_lora).
    lora_alpha: float = 16.0
    lora_rank: int = 16
    timestep: int = 399

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    @classmethod
    def from_dict(cls, data: dict) -> OSDFaceSpec:
        data = dict(data)
        if "vq_encoder" in data:
            data["vq_encoder"] = VQEncoderConfig.from_dict(data["vq_encoder"])
        return cls(**data)


# Stable Diffusion 2.1-base architecture (the configs of its unet/ vae/ scheduler/ folders), used to build
# the full-size model with random weights for benchmarks without downloading anything.
SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
)
SD21_BASE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=768,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)
SD21_BASE_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)

# A tiny model of the same classes (tests, CPU benchmark): VAE still /8 (64x64 latents), VQ still /32;
# UNet attention at 32x32 only, to keep CPU tests fast.
TINY_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32, attention_head_dim=(1, 2), use_linear_projection=True,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=512, norm_num_groups=8,
    block_out_channels=(8, 8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)
TINY_SPEC = OSDFaceSpec(
    vq_encoder=VQEncoderConfig(ch=8, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=1, z_channels=32, embed_dim=32,
                               n_embed=128, norm_groups=8),
)


class OSDFaceModel(nn.Module):
    def __init__(self, prompt: VisualPrompt, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler: DDIMScheduler, timestep: int):
        super().__init__()
        self.prompt, self.unet, self.vae = prompt, unet, vae
        self.timestep = timestep
        alpha_bar = float(scheduler.alphas_cumprod[timestep].double())
        self.sqrt_a, self.sqrt_1ma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        self.scaling = float(vae.config.scaling_factor)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def place(self, device: torch.device, dtype: torch.dtype) -> OSDFaceModel:
        """Everything on `device`, the UNet and VAE in `dtype`, the visual prompt left in the fp32 it was loaded
        in: its nearest-code choice is discrete, and with a bf16 encoder and codebook the golden crops got other
        codes (by up to 3.5), a different prompt rather than rounding."""
        self.to(device)
        for part in (self.unet, self.vae):
            nn.Module.to(part, dtype=dtype)  # not diffusers' own .to(), which warns about any cast after loading
        return self

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 in [0, 1] on the model's device -> float32 (B, 3, H, W) in [0, 1]."""
        x = crops.float() * 2 - 1
        prompt = self.prompt(x).to(self.dtype)
        z = self.vae.encode(x.to(self.dtype)).latent_dist.mean * self.scaling
        eps = self.unet(z, self.timestep, encoder_hidden_states=prompt, return_dict=False)[0]
        x0 = (z.float() - self.sqrt_1ma * eps.float()) / self.sqrt_a  # in fp32: a small difference of large terms
        image = self.vae.decode((x0 / self.scaling).to(z.dtype)).sample
        return (image.float().clamp(-1, 1) + 1) / 2


def build_random_model(spec: OSDFaceSpec, unet_config: dict, vae_config: dict,
                       scheduler_config: dict = SD21_BASE_SCHEDULER, device: str | torch.device = "cpu") -> OSDFaceModel:
    """The same modules with random weights (benchmarks, tests): speed does not depend on weight values.
    `device` 'meta' builds it without memory (FLOP counting); 'cuda' initialises on the GPU."""
    scheduler = DDIMScheduler(**scheduler_config)  # its tables stay real CPU tensors
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        prompt = VisualPrompt(spec.vq_encoder, unet.config.cross_attention_dim)
        vae = AutoencoderKL(**vae_config)
    return OSDFaceModel(prompt, unet, vae, scheduler, spec.timestep)
