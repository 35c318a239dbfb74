"""Where the OSDFace weights live, how they load, and how to get them.

Two parts, looked for in this order:
- OSDFace's own files, in `restore.weights` (default: $REELFACE_HOME/models/osdface, REELFACE_HOME
  defaulting to ~/.cache/reelface): associate_2.ckpt, embedding_change_weights.pth,
  pytorch_lora_weights.safetensors, and optionally osdface_config.json (architecture overrides).
- Stable Diffusion 2.1-base in diffusers layout (unet/ vae/ scheduler/): `restore.base_model` when it is a
  folder; else unet/ vae/ scheduler/ inside the weights folder; else the Hugging Face cache entry of the
  repo id `restore.base_model` (never downloaded during a run: `reelface models download osdface` does).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import torch

from ..errors import ReelfaceError
from .checkpoint_io import load_tensors
from .lora import merge_lora, read_lora
from .vq_prompt import VisualPrompt

if TYPE_CHECKING:  # diffusers is imported only to load, so `reelface models` stays quick
    from .osdface_model import OSDFaceModel, OSDFaceSpec

VQ_FILE = "associate_2.ckpt"
EMBEDDING_FILE = "embedding_change_weights.pth"
LORA_FILE = "pytorch_lora_weights.safetensors"
SPEC_FILE = "osdface_config.json"
OSDFACE_FILES = {
    VQ_FILE: "VQ visual-prompt encoder (Lightning checkpoint, keys vqvae_LQ.*)",
    EMBEDDING_FILE: "codes -> prompt embeddings (two 1x1 convolutions)",
    LORA_FILE: "UNet LoRA (merged into the UNet at load, at 16 / 16 = 1.0 as the reference does)",
}
BASE_PARTS = ("unet", "vae", "scheduler")
BASE_DOWNLOAD_PATTERNS = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                          "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                          "scheduler/scheduler_config.json"]
OSDFACE_RELEASE = "https://github.com/jkwang28/OSDFace (README: 'Download the pretrained model')"
_VQ_PREFIX = "vqvae_LQ."


def models_home() -> Path:
    return Path(os.environ.get("REELFACE_HOME", Path.home() / ".cache" / "reelface")).expanduser() / "models"


def weights_dir(restore_cfg) -> Path:
    return Path(restore_cfg.weights).expanduser() if restore_cfg.weights else models_home() / "osdface"


def _base_part_present(folder: Path, part: str) -> bool:
    if part == "scheduler":
        return (folder / part / "scheduler_config.json").is_file()
    has_weights = any((folder / part / f"diffusion_pytorch_model.{ext}").is_file() for ext in ("safetensors", "bin"))
    return (folder / part / "config.json").is_file() and has_weights


def _hf_cached(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=BASE_DOWNLOAD_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


@dataclass
class BaseModelSearch:
    """Where the SD 2.1-base parts were looked for, and the folder that has all of them (or None)."""

    found: Path | None
    tried: list[str]


def find_base_model(restore_cfg) -> BaseModelSearch:
    name = restore_cfg.base_model
    tried = []
    local = Path(name).expanduser()
    if local.is_dir():
        if all(_base_part_present(local, p) for p in BASE_PARTS):
            return BaseModelSearch(local, [str(local)])
        tried.append(f"{local} (restore.base_model; incomplete)")
    own = weights_dir(restore_cfg)
    if all(_base_part_present(own, p) for p in BASE_PARTS):
        return BaseModelSearch(own, tried + [str(own)])
    tried.append(f"{own}/{{unet,vae,scheduler}}")
    if not local.is_dir():
        cached = _hf_cached(name)
        if cached is not None and all(_base_part_present(cached, p) for p in BASE_PARTS):
            return BaseModelSearch(cached, tried + [f"HF cache: {name}"])
        from huggingface_hub.constants import HF_HUB_CACHE

        tried.append(f"Hugging Face cache ({HF_HUB_CACHE}) entry of '{name}'")
    return BaseModelSearch(None, tried)


def expected_layout(restore_cfg) -> str:
    folder = weights_dir(restore_cfg)
    lines = [f"{folder}/"] + [f"  {name:34s} {what}" for name, what in OSDFACE_FILES.items()]
    lines += [f"  {SPEC_FILE:34s} optional: architecture overrides (JSON)",
              f"Stable Diffusion 2.1-base (diffusers layout), in restore.base_model "
              f"('{restore_cfg.base_model}': a folder, or a Hugging Face repo id in the local cache) or inside "
              f"{folder}/:",
              "  unet/config.json, unet/diffusion_pytorch_model.safetensors",
              "  vae/config.json, vae/diffusion_pytorch_model.safetensors",
              "  scheduler/scheduler_config.json"]
    return "\n".join(lines)


def check_present(restore_cfg) -> Path:
    """The base-model folder; ReelfaceError listing what is missing and the expected layout otherwise."""
    folder = weights_dir(restore_cfg)
    missing = [str(folder / name) for name in OSDFACE_FILES if not (folder / name).is_file()]
    base = find_base_model(restore_cfg)
    if base.found is None:
        missing.append("Stable Diffusion 2.1-base unet/ vae/ scheduler/ (looked in: " + "; ".join(base.tried) + ")")
    if missing:
        raise ReelfaceError(
            "osdface weights are missing:\n  - " + "\n  - ".join(missing) + "\nExpected layout:\n"
            + expected_layout(restore_cfg)
            + f"\nGet them with `reelface models download osdface` (SD 2.1-base from Hugging Face) and the three "
              f"OSDFace files from {OSDFACE_RELEASE}; or set restore.weights / restore.base_model.")
    return base.found


def read_spec(folder: Path) -> OSDFaceSpec:
    from .osdface_model import OSDFaceSpec

    path = folder / SPEC_FILE
    if not path.is_file():
        return OSDFaceSpec()
    try:
        return OSDFaceSpec.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ReelfaceError(f"{path} is not a valid OSDFace config ({exc}): fix or delete it") from None


def _load_strict(module: torch.nn.Module, state: dict, path: Path) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong:
        raise ReelfaceError(f"{path} does not fit the OSDFace architecture: missing {missing[:3]}, "
                            f"wrong shape {wrong[:3]} ({len(missing)} missing, {len(wrong)} mismatched)")
    module.load_state_dict({k: state[k] for k in expected})


def load_visual_prompt(folder: Path, spec: OSDFaceSpec, cross_attention_dim: int) -> VisualPrompt:
    prompt = VisualPrompt(spec.vq_encoder, cross_attention_dim)
    ckpt = load_tensors(folder / VQ_FILE)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    # The checkpoint also holds the decoder and other training parts: keep the encoder side only.
    vq_state = {k[len(_VQ_PREFIX):]: v for k, v in state.items() if k.startswith(_VQ_PREFIX)}
    if not vq_state:
        raise ReelfaceError(f"{folder / VQ_FILE} has no '{_VQ_PREFIX}*' weights: it is not OSDFace's associate_2.ckpt")
    _load_strict(prompt.vq, vq_state, folder / VQ_FILE)
    change = load_tensors(folder / EMBEDDING_FILE)
    _load_strict(prompt.embedding_change, change if isinstance(change, dict) else {}, folder / EMBEDDING_FILE)
    return prompt


def load_model(restore_cfg) -> OSDFaceModel:
    """The OSDFace model in fp32 on the CPU, LoRA merged into the UNet."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from .osdface_model import OSDFaceModel

    base = check_present(restore_cfg)
    folder = weights_dir(restore_cfg)
    spec = read_spec(folder)
    try:
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=torch.float32)
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=torch.float32)
        scheduler = DDIMScheduler.from_pretrained(base, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise ReelfaceError(f"could not load Stable Diffusion 2.1-base from {base}: {exc}") from None
    lora = read_lora(folder / LORA_FILE)
    stored = sum(pair.alpha is not None for pair in lora.values())
    if stored:
        print(f"reelface: {folder / LORA_FILE} stores its own alpha for {stored} of {len(lora)} layers: those are "
              f"merged at that alpha / their rank, the others at {spec.lora_scale:g}", file=sys.stderr)
    merge_lora(unet, lora, spec.lora_scale)
    prompt = load_visual_prompt(folder, spec, unet.config.cross_attention_dim)
    return OSDFaceModel(prompt, unet, vae, scheduler, spec.timestep).eval().requires_grad_(False)


def status_lines(restore_cfg) -> list[str]:
    """For `reelface models`: each part, where it is looked for, present or not."""
    folder = weights_dir(restore_cfg)
    lines = [f"  {name:34s} {'present' if (folder / name).is_file() else 'MISSING'}  ({folder / name})"
             for name in OSDFACE_FILES]
    base = find_base_model(restore_cfg)
    where = str(base.found) if base.found else "looked in: " + "; ".join(base.tried)
    lines.append(f"  {'SD 2.1-base unet/ vae/ scheduler/':34s} {'present' if base.found else 'MISSING'}  ({where})")
    return lines


def download(restore_cfg) -> str:
    """Fetch SD 2.1-base into the Hugging Face cache; OSDFace's own files are not on the hub."""
    from huggingface_hub import snapshot_download

    name = restore_cfg.base_model
    if Path(name).expanduser().is_dir():
        lines = [f"SD 2.1-base: using the local folder {name} (nothing to download)"]
    else:
        try:
            path = snapshot_download(name, allow_patterns=BASE_DOWNLOAD_PATTERNS)
        except Exception as exc:  # noqa: BLE001 - network, auth and missing-repo errors all end here
            raise ReelfaceError(f"could not download '{name}' from Hugging Face ({type(exc).__name__}: {exc}); "
                                "check the network, or set restore.base_model to a local SD 2.1-base folder") from None
        lines = [f"SD 2.1-base: {name} -> {path}"]
    folder = weights_dir(restore_cfg)
    missing = [n for n in OSDFACE_FILES if not (folder / n).is_file()]
    if missing:
        lines.append(f"OSDFace files still missing in {folder}: {', '.join(missing)}. Its authors publish them "
                     f"outside the Hugging Face hub: download them from {OSDFACE_RELEASE} and put them there.")
    else:
        lines.append(f"OSDFace files: all present in {folder}")
    return "\n".join(lines)
