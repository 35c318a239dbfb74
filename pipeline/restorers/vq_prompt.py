"""OSDFace's visual prompt: a VQ encoder maps a face to its 77 distinct nearest codebook entries, a 1x1
two-layer MLP maps those to UNet prompt embeddings (in place of a text encoder).

Module and parameter names follow the published checkpoint (`associate_2.ckpt`, keys `vqvae_LQ.encoder.*`,
`vqvae_LQ.quant_conv.*`, `vqvae_LQ.quantize.embedding.weight`; `embedding_change_weights.pth`, keys
`conv1.*`, `conv2.*`), so those files load strictly into these modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VQEncoderConfig:
    """Architecture of the VQ encoder. Defaults are the published OSDFace one; tests use tiny ones."""

    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 2, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 512
    z_channels: int = 512
    embed_dim: int = 512
    n_embed: int = 1024
    heads: int = 1
    norm_groups: int = 32  # the published model uses 32; tiny test models need fewer
    prompt_tokens: int = 77

    @classmethod
    def from_dict(cls, data: dict) -> VQEncoderConfig:
        data = dict(data)
        for key in ("ch_mult", "attn_resolutions"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class SelfAttention(nn.Module):
    """Spatial self-attention over all positions, run with SDPA."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm1 = _norm(channels, groups)
        # The checkpoint also has a norm2 (used for cross-attention in the decoder this encoder was trained
        # with); it stays so the checkpoint loads strictly, but self-attention never uses it.
        self.norm2 = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm1(x)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, HW, C/heads)
            return t.reshape(b, self.heads, c // self.heads, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(heads(self.q(n)), heads(self.k(n)), heads(self.v(n)))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as the model was trained


class Encoder(nn.Module):
    def __init__(self, cfg: VQEncoderConfig):
        super().__init__()
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, c_in = cfg.resolution, cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            c_out = cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResBlock(c_in, c_out, g))
                c_in = c_out
                if res in cfg.attn_resolutions:
                    stage.attn.append(SelfAttention(c_in, cfg.heads, g))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(c_in)
                res //= 2
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResBlock(c_in, c_in, g)
        self.mid.attn_1 = SelfAttention(c_in, cfg.heads, g)
        self.mid.block_2 = ResBlock(c_in, c_in, g)
        self.norm_out = _norm(c_in, g)
        self.conv_out = nn.Conv2d(c_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Codebook(nn.Module):
    def __init__(self, n_embed: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, dim)


def select_distinct_codes(z: torch.Tensor, codebook: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` distinct codes nearest to the positions of each image, nearest first, for a whole batch.

    z: (B, P, C) encoder features per position; codebook: (N, C). Each position votes for its nearest code;
    a code ranks by the smallest distance among the positions that chose it (the first time a walk over the
    positions sorted by distance meets it). Returns codes (B, count) and valid (B, count): False where an
    image has fewer than `count` distinct codes (those rows are zero prompts, as in the reference).
    Tensor ops only (no per-image loop). Ties between two codes at exactly the same distance go to the
    lower code index.
    """
    dist = (z * z).sum(-1, keepdim=True) + (codebook * codebook).sum(-1) - 2 * torch.matmul(z, codebook.t())
    nearest_dist, nearest = dist.min(dim=2)  # (B, P)
    best = torch.full((z.shape[0], codebook.shape[0]), float("inf"), device=z.device)
    best = best.scatter_reduce(1, nearest, nearest_dist, reduce="amin", include_self=True)
    if best.shape[1] < count:  # a codebook smaller than the prompt: the rest can only be empty rows
        best = F.pad(best, (0, count - best.shape[1]), value=float("inf"))
    order = torch.sort(best, dim=1, stable=True).indices[:, :count]
    valid = torch.isfinite(best.gather(1, order))
    return order.masked_fill(~valid, 0), valid


class EmbeddingChange(nn.Module):
    """(B, T, C) codes -> (B, T, D) prompt embeddings: two 1x1 convolutions with SiLU after each."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_in // 2, 1)
        self.conv2 = nn.Conv1d(c_in // 2, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv1(x.transpose(1, 2)))
        return F.silu(self.conv2(x)).transpose(1, 2)


class VQEncoder(nn.Module):
    """The part of the checkpoint's `vqvae_LQ` that the prompt needs: encoder, quant_conv, codebook."""

    def __init__(self, cfg: VQEncoderConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.quantize = Codebook(cfg.n_embed, cfg.embed_dim)


class VisualPrompt(nn.Module):
    """Face crops in [-1, 1] -> (B, 77, cross_attention_dim) prompt embeddings for the UNet.

    Meant to run in fp32 whatever the UNet's dtype (OSDFaceModel.place): the codes are a discrete choice.
    """

    def __init__(self, cfg: VQEncoderConfig, cross_attention_dim: int):
        super().__init__()
        self.cfg = cfg
        self.vq = VQEncoder(cfg)
        self.embedding_change = EmbeddingChange(cfg.embed_dim, cross_attention_dim)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The selected codebook vectors (B, 77, embed_dim), zero rows where fewer codes were distinct."""
        # The reference feeds its [-1, 1] input through a second (x - 0.5) / 0.5; the published weights
        # were made with that, so the encoder sees 2x - 1 of the [-1, 1] crop here too.
        h = self.vq.quant_conv(self.vq.encoder(x * 2 - 1))
        z = h.flatten(2).transpose(1, 2)  # (B, H*W, C), positions in raster order
        book = self.vq.quantize.embedding.weight
        codes, valid = select_distinct_codes(z, book, self.cfg.prompt_tokens)
        return book[codes] * valid.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding_change(self.codes(x))
