"""OSDFace restorer: tiny random models of the real classes, written in the published file layout and loaded
through the real loader (no network, no GPU)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from pipeline.restorers import get_restorer
from pipeline.restorers.batch_tuner import batch_from_measurements
from pipeline.restorers.checkpoint_io import load_tensors
from pipeline.restorers.lora import merge_lora, read_lora
from pipeline.restorers.osdface_model import TINY_SPEC, TINY_UNET, TINY_VAE, build_random_model
from pipeline.restorers.osdface_weights import load_model
from pipeline.restorers.vq_prompt import select_distinct_codes

LORA_RANK = 4


def _lora_targets(unet: torch.nn.Module) -> list[str]:
    """Attention projections (linear), transformer proj_in/out and resnet convs (conv LoRA), like OSDFace's."""
    names = []
    for name, module in unet.named_modules():
        leaf = name.split(".")[-1]
        if isinstance(module, torch.nn.Linear) and (leaf in ("to_q", "to_k", "to_v", "proj_in", "proj_out")
                                                    or name.endswith("to_out.0")):
            names.append(name)
        elif isinstance(module, torch.nn.Conv2d) and leaf in ("conv1", "conv2") and "resnets" in name:
            names.append(name)
    return names


def _random_lora(unet: torch.nn.Module, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    modules = dict(unet.named_modules())
    pairs = {}
    for name in _lora_targets(unet):
        w = modules[name].weight
        if w.ndim == 2:
            down = torch.randn(LORA_RANK, w.shape[1], generator=generator) * 0.05
            up = torch.randn(w.shape[0], LORA_RANK, generator=generator) * 0.05
        else:
            down = torch.randn(LORA_RANK, *w.shape[1:], generator=generator) * 0.05
            up = torch.randn(w.shape[0], LORA_RANK, 1, 1, generator=generator) * 0.05
        pairs[name] = (down, up)
    return pairs


class _HyperParameters:
    """Stands for the omegaconf/argparse objects a Lightning checkpoint carries beside its weights."""

    def __init__(self):
        self.lr = 1e-4


def write_tiny_osdface(folder, seed=0, base_inside=True):
    """A tiny OSDFace in the official layout: unet/ vae/ scheduler/ (diffusers), associate_2.ckpt (Lightning,
    vqvae_LQ.* keys plus decoder/extras), embedding_change_weights.pth, pytorch_lora_weights.safetensors (peft
    keys), osdface_config.json (the tiny architecture). Returns the random LoRA pairs and the source model."""
    torch.manual_seed(seed)
    model = build_random_model(TINY_SPEC, TINY_UNET, TINY_VAE)
    with torch.no_grad():  # random decoders overshoot to +-10; bring images into [-1, 1] like a trained one
        model.vae.decoder.conv_out.weight *= 0.1
        model.vae.decoder.conv_out.bias.zero_()
    base = folder if base_inside else folder / "sd21"
    model.unet.save_pretrained(base / "unet")
    model.vae.save_pretrained(base / "vae")
    from diffusers import DDIMScheduler

    from pipeline.restorers.osdface_model import SD21_BASE_SCHEDULER

    DDIMScheduler(**SD21_BASE_SCHEDULER).save_pretrained(base / "scheduler")
    state = {f"vqvae_LQ.{k}": v for k, v in model.prompt.vq.state_dict().items()}
    state["vqvae_LQ.decoder.conv_in.weight"] = torch.zeros(4, 4, 3, 3)  # unused parts of the training model
    state["vqvae_HQ.quantize.embedding.weight"] = torch.zeros(8, 4)
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": _HyperParameters()}, folder / "associate_2.ckpt")
    torch.save(model.prompt.embedding_change.state_dict(), folder / "embedding_change_weights.pth")
    pairs = _random_lora(model.unet, torch.Generator().manual_seed(seed + 1))
    tensors = {}
    for name, (down, up) in pairs.items():
        tensors[f"unet.{name}.lora_A.weight"] = down
        tensors[f"unet.{name}.lora_B.weight"] = up
    save_file(tensors, str(folder / "pytorch_lora_weights.safetensors"))
    spec = dataclasses.asdict(TINY_SPEC)
    (folder / "osdface_config.json").write_text(json.dumps(spec))
    return pairs, model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("osdface")
    pairs, source = write_tiny_osdface(folder)
    return folder, pairs, source


def _cfg(folder, **restore):
    values = dict(restorer="osdface", weights=str(folder), device="cpu", batch_size=2)
    values.update(restore)
    return load_config("default", [f"restore.{k}={v}" for k, v in values.items()])


def _faces(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-frequency noise upsampled) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 16, 16, generator=g), size=512, mode="bicubic").clamp(0, 1)


@pytest.fixture(scope="module")
def restorer(tiny):
    return get_restorer(_cfg(tiny[0]).restore)


def test_restore_shape_range_repeat_and_batching(restorer):
    crops = _faces(2)
    first = restorer.restore(crops, None)  # batch_size 2: one pass
    assert first.shape == (2, 3, 512, 512) and first.dtype == torch.float32
    assert torch.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    assert first.std() > 0.01  # not a constant image
    assert not torch.allclose(first, crops, atol=1e-3)  # the model did something
    assert torch.equal(restorer.restore(crops, None), first)  # bit-identical: no sampled noise
    assert restorer.restore(crops[:0], None).shape == (0, 3, 512, 512)
    restorer.batch_size = 1  # the same call now runs as two single-face passes
    try:
        singles = restorer.restore(crops, None)
    finally:
        restorer.batch_size = 2
    # fp32 kernels differ with the batch shape: allow a quarter of one 8-bit level
    torch.testing.assert_close(singles, first, atol=1e-3, rtol=0)


def test_loaded_modules_equal_the_written_ones(tiny, restorer):
    folder, _, source = tiny
    for name, tensor in source.prompt.state_dict().items():
        assert torch.equal(restorer.model.prompt.state_dict()[name], tensor), name
    for name, tensor in source.vae.state_dict().items():
        assert torch.equal(restorer.model.vae.state_dict()[name], tensor), name
    processors = {type(p).__name__ for p in restorer.model.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}  # torch SDPA attention


def _add_unmerged_lora(unet: torch.nn.Module, pairs, scale: float) -> None:
    """Reference LoRA: the base layer plus scale * up(down(x)) at run time, by forward hooks."""
    modules = dict(unet.named_modules())
    for name, (down, up) in pairs.items():
        layer = modules[name]

        def hook(mod, args, out, down=down, up=up):
            x = args[0]
            if isinstance(mod, torch.nn.Linear):
                return out + scale * F.linear(F.linear(x, down), up)
            low = F.conv2d(x, down, stride=mod.stride, padding=mod.padding, dilation=mod.dilation)
            return out + scale * F.conv2d(low, up)

        layer.register_forward_hook(hook)


def test_merged_lora_equals_unmerged_lora(tiny, restorer):
    folder, pairs, _ = tiny
    merged = restorer.model.unet
    unmerged = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 64, 64, generator=g)
    prompt = torch.randn(1, 77, TINY_UNET["cross_attention_dim"], generator=g)
    with torch.no_grad():
        without_lora = unmerged(latents, 399, encoder_hidden_states=prompt).sample
        _add_unmerged_lora(unmerged, pairs, TINY_SPEC.lora_alpha / LORA_RANK)
        expected = unmerged(latents, 399, encoder_hidden_states=prompt).sample
        got = merged(latents, 399, encoder_hidden_states=prompt).sample
    assert (without_lora - expected).abs().max() > 0.05  # the LoRA matters
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_older_lora_key_formats_merge_the_same(tiny, tmp_path):
    folder, pairs, source = tiny
    old, processor = {}, {}
    for name, (down, up) in pairs.items():
        old[f"unet.{name}.lora.down.weight"], old[f"unet.{name}.lora.up.weight"] = down, up
        attn, _, proj = name.removesuffix(".0").rpartition(".")
        if proj in ("to_q", "to_k", "to_v", "to_out"):
            processor[f"{attn}.processor.{proj}_lora.down.weight"] = down
            processor[f"{attn}.processor.{proj}_lora.up.weight"] = up
    save_file(old, str(tmp_path / "old.safetensors"))
    save_file(processor, str(tmp_path / "proc.safetensors"))
    peft = read_lora(folder / "pytorch_lora_weights.safetensors")
    assert set(read_lora(tmp_path / "old.safetensors")) == set(peft)
    proc = read_lora(tmp_path / "proc.safetensors")
    assert len(proc) == len(processor) // 2 > 0 and set(proc) <= set(peft)
    for name, pair in proc.items():
        assert torch.equal(pair.down, peft[name].down) and torch.equal(pair.up, peft[name].up)


def _reference_select(z: torch.Tensor, codebook: torch.Tensor, count: int):
    """The straightforward per-image walk: positions by distance to their nearest code, first distinct codes."""
    all_codes, all_valid = [], []
    for image in z:
        d = (image ** 2).sum(1, keepdim=True) + (codebook ** 2).sum(1) - 2 * image @ codebook.t()
        values, nearest = d.min(dim=1)
        chosen = []
        for p in torch.argsort(values, stable=True).tolist():
            code = int(nearest[p])
            if code not in chosen:
                chosen.append(code)
            if len(chosen) == count:
                break
        valid = [True] * len(chosen) + [False] * (count - len(chosen))
        all_codes.append(chosen + [0] * (count - len(chosen)))
        all_valid.append(valid)
    return torch.tensor(all_codes), torch.tensor(all_valid)


@pytest.mark.parametrize("n_codes", [40, 300, 1024])
def test_vectorised_code_selection_equals_per_image_reference(n_codes):
    g = torch.Generator().manual_seed(n_codes)
    z = torch.randn(5, 256, 16, generator=g)
    codebook = torch.randn(n_codes, 16, generator=g)
    codes, valid = select_distinct_codes(z, codebook, 77)
    ref_codes, ref_valid = _reference_select(z, codebook, 77)
    assert torch.equal(valid, ref_valid)
    assert torch.equal(codes[valid], ref_codes[ref_valid])
    if n_codes == 40:  # fewer distinct codes than prompt tokens: zero rows at the end
        assert not valid[:, 40:].any() and valid[:, 0].all()
    else:
        assert valid.all()


def test_missing_files_list_the_expected_layout(tmp_path):
    (tmp_path / "embedding_change_weights.pth").write_bytes(b"")
    with pytest.raises(ReelfaceError) as err:
        get_restorer(_cfg(tmp_path, base_model=str(tmp_path / "nowhere")).restore)
    text = str(err.value)
    assert "associate_2.ckpt" in text and "pytorch_lora_weights.safetensors" in text
    assert "Expected layout" in text and "unet/config.json" in text and "reelface models download osdface" in text


def test_base_model_in_its_own_folder(tmp_path):
    write_tiny_osdface(tmp_path, base_inside=False)
    model = load_model(_cfg(tmp_path, base_model=str(tmp_path / "sd21")).restore)
    assert model.unet.config.cross_attention_dim == TINY_UNET["cross_attention_dim"]
    with pytest.raises(ReelfaceError, match="SD 2.1-base|Stable Diffusion 2.1-base"):
        load_model(_cfg(tmp_path, base_model="someone/not-in-the-cache").restore)


def test_wrong_or_corrupt_weights_are_clear_errors(tiny, tmp_path):
    folder = tiny[0]
    for name in os.listdir(folder):
        if not (folder / name).is_dir():
            (tmp_path / name).write_bytes((folder / name).read_bytes())
    cfg = _cfg(tmp_path, base_model=str(folder)).restore
    (tmp_path / "associate_2.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ReelfaceError, match="not a readable PyTorch checkpoint"):
        load_model(cfg)
    torch.save({"state_dict": {"vqvae_LQ.encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "associate_2.ckpt")
    with pytest.raises(ReelfaceError, match="does not fit the OSDFace architecture"):
        load_model(cfg)
    save_file({"unet.no.such.layer.lora_A.weight": torch.zeros(4, 8), "unet.no.such.layer.lora_B.weight":
               torch.zeros(8, 4)}, str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ReelfaceError, match="layers this UNet does not have"):
        merge_lora(torch.nn.Sequential(torch.nn.Linear(8, 8)), read_lora(tmp_path / "pytorch_lora_weights.safetensors"), 16)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


def test_checkpoint_extras_never_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {"vqvae_LQ.a": torch.ones(2)}, "callbacks": _Exploit(),
                "hyper_parameters": _HyperParameters()}, tmp_path / "x.ckpt")
    loaded = load_tensors(tmp_path / "x.ckpt")
    assert torch.equal(loaded["state_dict"]["vqvae_LQ.a"], torch.ones(2))
    assert not (tmp_path / "exploited").exists()


def test_batch_size_fit_from_two_measurements():
    gib = 1 << 30
    # 3 GiB fixed + 1 GiB per face, 40 GiB budget -> 37 -> 32 (multiple of 8)
    assert batch_from_measurements(4 * gib, 5 * gib, 40 * gib) == 32
    assert batch_from_measurements(4 * gib, 5 * gib, 9 * gib) == 6
    assert batch_from_measurements(4 * gib, 5 * gib, 2 * gib) == 1
    assert batch_from_measurements(4 * gib, 5 * gib, 500 * gib) == 64


def test_models_command_shows_presence(tiny, capsys):
    folder = tiny[0]
    assert main(["models", "--set", "restore.restorer=osdface", "--set", f"restore.weights={folder}"]) == 0
    out = capsys.readouterr().out
    for name in ("fusion", "osdface", "onnx", "identity"):
        assert f"{name}:" in out
    osdface = out.split("osdface:")[1].split("onnx:")[0]
    assert "MISSING" not in osdface and osdface.count("present") == 4 and str(folder) in osdface


def test_vae_memory_options_take_effect(tiny):
    restorer = get_restorer(_cfg(tiny[0], vae_tiling="true", vae_slicing="true", batch_size=0).restore)
    vae = restorer.model.vae
    assert vae.use_tiling and vae.use_slicing and vae.tile_sample_min_size == 256 and vae.tile_latent_min_size == 32
    assert restorer.batch_size is None and restorer._fit_batch_size() == 4  # batch_size 0 on the CPU: the default


def test_download_reports_what_is_left_to_do(tiny, tmp_path, capsys):
    args = ["models", "download", "osdface", "--set", "restore.restorer=osdface",
            "--set", f"restore.base_model={tiny[0]}", "--set", f"restore.weights={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "using the local folder" in out and "still missing" in out and "associate_2.ckpt" in out
