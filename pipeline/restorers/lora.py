"""Read a UNet LoRA file and merge it into the UNet weights once, at load time (no per-call LoRA cost).

Key formats understood (any of the prefixes `unet.`, `base_model.model.`):
- peft / diffusers >= 0.22: `<module>.lora_A.weight`, `<module>.lora_B.weight` (also `.lora_A.default.weight`)
- diffusers LoRACompatible layers: `<module>.lora.down.weight`, `<module>.lora.up.weight`
- diffusers attention processors: `<attn>.processor.to_q_lora.down.weight` (to_q/to_k/to_v/to_out)
Scale: the caller's (OSDFace's reference merges at its lora_alpha / lora_rank = 16 / 16 whatever rank the file
has), except for a module whose file stores `<module>.alpha`: that alpha / the module's rank, as peft would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import ReelfaceError

_PREFIXES = ("unet.", "base_model.model.")
_PATTERNS = [
    (re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.default)?\.weight$"), {"A": "down", "B": "up"}),
    (re.compile(r"^(?P<module>.+)\.lora\.(?P<part>down|up)\.weight$"), {"down": "down", "up": "up"}),
]
_PROCESSOR = re.compile(r"^(?P<attn>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$")


@dataclass
class LoraPair:
    down: torch.Tensor  # (r, in) or (r, in, kh, kw)
    up: torch.Tensor  # (out, r) or (out, r, 1, 1)
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self, shape: torch.Size, default_scale: float) -> torch.Tensor:
        """The weight update scale * up @ down, in fp32, shaped like the base weight."""
        scale = self.alpha / self.rank if self.alpha is not None else default_scale
        up, down = self.up.float().reshape(self.up.shape[0], -1), self.down.float().reshape(self.rank, -1)
        return (scale * (up @ down)).reshape(shape)


def _parse_key(key: str) -> tuple[str, str] | None:
    """'unet.x.to_q.lora_A.weight' -> ('x.to_q', 'down'); None for keys that are not LoRA matrices."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    m = _PROCESSOR.match(key)
    if m:
        proj = "to_out.0" if m["proj"] == "to_out" else m["proj"]
        return f"{m['attn']}.{proj}", m["part"]
    for pattern, parts in _PATTERNS:
        m = pattern.match(key)
        if m:
            return m["module"], parts[m["part"]]
    return None


def read_lora(path: Path) -> dict[str, LoraPair]:
    """Module name (as in unet.named_modules()) -> its LoRA pair."""
    state = load_file(str(path))
    halves: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    unknown = []
    for key, tensor in state.items():
        if key.startswith("text_encoder"):
            continue  # OSDFace has no text encoder
        parsed = _parse_key(key)
        if parsed:
            halves.setdefault(parsed[0], {})[parsed[1]] = tensor
        elif key.endswith(".alpha"):
            alphas[_strip(key[: -len(".alpha")])] = float(tensor)
        else:
            unknown.append(key)
    if unknown:
        raise ReelfaceError(f"{path}: not a LoRA file this loader understands (keys such as {unknown[:3]}); "
                            "expected peft-style '<module>.lora_A.weight'/'lora_B.weight' or "
                            "'<module>.lora.down.weight'/'lora.up.weight' keys")
    incomplete = [m for m, h in halves.items() if set(h) != {"down", "up"}]
    if incomplete:
        raise ReelfaceError(f"{path}: LoRA modules with only one of their two matrices: {incomplete[:3]}")
    if not halves:
        raise ReelfaceError(f"{path}: no LoRA weights in the file")
    return {m: LoraPair(h["down"], h["up"], alphas.get(m)) for m, h in halves.items()}


def _strip(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


@torch.no_grad()
def merge_lora(unet: nn.Module, pairs: dict[str, LoraPair], default_scale: float) -> None:
    """W <- W + scale * up @ down for every LoRA module; every one must name a Linear/Conv2d of the UNet."""
    modules = dict(unet.named_modules())
    missing = [name for name in pairs if not isinstance(modules.get(name), (nn.Linear, nn.Conv2d))]
    if missing:
        raise ReelfaceError(f"the LoRA file names {len(missing)} layers this UNet does not have (e.g. {missing[:3]}): "
                            "is the base model Stable Diffusion 2.1-base?")
    for name, pair in pairs.items():
        weight = modules[name].weight
        if pair.down.reshape(pair.rank, -1).shape[1] != weight[0].numel() or pair.up.shape[0] != weight.shape[0]:
            raise ReelfaceError(f"LoRA for '{name}' has shapes {tuple(pair.down.shape)}/{tuple(pair.up.shape)} "
                                f"that do not fit the UNet weight {tuple(weight.shape)}")
        weight.copy_((weight.float() + pair.delta(weight.shape, default_scale)).to(weight.dtype))
