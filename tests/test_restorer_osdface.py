"""OSDFace restorer on ../shared/data/osdface_golden: tiny random weights in the published file layout and the
reference inference code's own outputs for two crops, loaded through the public path (config -> registry ->
restorer; no network, no GPU)."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from pipeline.restorers import get_restorer
from pipeline.restorers.batch_tuner import batch_from_measurements
from pipeline.restorers.checkpoint_io import load_tensors
from pipeline.restorers.lora import merge_lora, read_lora
from pipeline.restorers.osdface_weights import LORA_FILE, OSDFACE_FILES, SPEC_FILE, load_model
from pipeline.restorers.vq_prompt import select_distinct_codes


@pytest.fixture(scope="module")
def golden(data_dir):
    """The reference's inputs and outputs, and the folder of the weights it ran with."""
    folder = data_dir / "osdface_golden"
    return folder / "weights", load_file(str(folder / "golden.safetensors"))


def _cfg(folder, **restore):
    values = dict(restorer="osdface", weights=str(folder), device="cpu", batch_size=2)
    values.update(restore)
    return load_config("default", [f"restore.{k}={v}" for k, v in values.items()])


def _crops(golden) -> torch.Tensor:
    return golden[1]["faces_uint8"].float() / 255


def _restore_seeing_the_prompt(restorer, crops: torch.Tensor):
    """restorer.restore(crops), with the codes and prompt embeddings its model used on the way (the input
    and output of the embedding-change module)."""
    seen = []
    hook = restorer.model.prompt.embedding_change.register_forward_hook(
        lambda module, args, out: seen.append((args[0].detach(), out.detach())))
    try:
        out = restorer.restore(crops, None)
    finally:
        hook.remove()
    return out, torch.cat([codes for codes, _ in seen]), torch.cat([embeds for _, embeds in seen])


def test_fp32_restores_as_the_reference(golden):
    restorer = get_restorer(_cfg(golden[0]).restore)
    crops, expected = _crops(golden), golden[1]
    out, codes, embeds = _restore_seeing_the_prompt(restorer, crops)  # batch_size 2: one pass
    assert torch.equal(codes, expected["codes"])
    torch.testing.assert_close(embeds, expected["prompt_embeds"], atol=1e-5, rtol=0)
    assert out.shape == (2, 3, 512, 512) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected["restored"], atol=1e-3, rtol=0)
    assert restorer.restore(crops[:0], None).shape == (0, 3, 512, 512)
    processors = {type(p).__name__ for p in restorer.model.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}  # torch SDPA attention


def test_bf16_keeps_the_reference_codes(golden, record_property):
    """UNet and VAE in bf16, the visual prompt in fp32: the codes stay the reference's exactly. The restored
    crop's difference from the fp32 reference is bf16's own (reported as bf16_restored_max_abs_diff)."""
    bf16 = get_restorer(_cfg(golden[0], dtype="bfloat16", batch_size=1).restore)
    assert bf16.model.unet.dtype == bf16.model.vae.dtype == torch.bfloat16
    assert {p.dtype for p in bf16.model.prompt.parameters()} == {torch.float32}
    crops, expected = _crops(golden), golden[1]
    # the first crop through the whole bf16 model (bf16 convolutions are slow on CPUs without bf16
    # instructions), the second through its visual prompt only
    out, codes, embeds = _restore_seeing_the_prompt(bf16, crops[:1])
    with torch.no_grad():
        codes = torch.cat([codes, bf16.model.prompt.codes(crops[1:] * 2 - 1)])
        embeds = torch.cat([embeds, bf16.model.prompt.embedding_change(codes[1:])])
    assert torch.equal(codes, expected["codes"])
    torch.testing.assert_close(embeds, expected["prompt_embeds"], atol=1e-5, rtol=0)
    diff = (out - expected["restored"][:1]).abs()
    record_property("bf16_restored_max_abs_diff", float(diff.max()))
    record_property("bf16_restored_mean_abs_diff", float(diff.mean()))
    print(f"bf16 restored vs fp32 reference: max {float(diff.max()):.4f}, mean {float(diff.mean()):.5f}")
    # bf16's own error (VAE and UNet): 0.0038 on average over the golden crops (benchmarks/README.md)
    assert float(diff.mean()) < 0.01


def _with_lora(golden, tmp_path, tensors: dict) -> load_config:
    """A weights folder that is the golden one but for its LoRA file."""
    folder = tmp_path / "weights"
    folder.mkdir(parents=True)
    for name in [*OSDFACE_FILES, SPEC_FILE, "unet", "vae", "scheduler"]:
        if name != LORA_FILE:
            (folder / name).symlink_to(golden[0] / name)
    save_file(tensors, str(folder / LORA_FILE))
    return _cfg(folder).restore


def _rank(lora: dict, rank: int) -> dict:
    """The golden LoRA cut to its first `rank` components (lora_A rows, lora_B columns)."""
    return {k: (v[:rank] if ".lora_A." in k else v[:, :rank]).contiguous() for k, v in lora.items()}


def _zero_padded(lora: dict, rank: int) -> dict:
    """The same low-rank update written at a higher rank with zero components: the same product up @ down."""
    padded = {}
    for k, v in lora.items():
        axis = 0 if ".lora_A." in k else 1
        shape = list(v.shape)
        shape[axis] = rank - v.shape[axis]
        padded[k] = torch.cat([v, v.new_zeros(shape)], axis)
    return padded


def test_lora_scale_is_the_references_whatever_the_files_rank(golden, tmp_path, capsys):
    """The reference merges at lora_alpha / lora_rank = 16 / 16 whatever the file's rank, so a rank-4 file and
    the same update zero-padded to rank 16 give the same UNet; a file that stores an alpha is merged at that
    alpha / its rank, and the loader says so."""
    lora = load_file(str(golden[0] / LORA_FILE))
    rank4 = _rank(lora, 4)
    assert {v.shape[0] for k, v in rank4.items() if ".lora_A." in k} == {4}
    merged4 = load_model(_with_lora(golden, tmp_path / "r4", rank4)).unet.state_dict()
    merged16 = load_model(_with_lora(golden, tmp_path / "r16", _zero_padded(rank4, 16))).unet.state_dict()
    base = UNet2DConditionModel.from_pretrained(golden[0], subfolder="unet").state_dict()
    name = next(k.removeprefix("unet.").replace(".lora_A", "") for k in rank4 if ".lora_A." in k)
    assert (merged4[name] - base[name]).abs().max() > 1e-3  # the LoRA changed the layer
    for key in merged16:
        torch.testing.assert_close(merged4[key], merged16[key], atol=1e-6, rtol=0)
    assert "stores its own alpha" not in capsys.readouterr().err

    stored = dict(rank4)
    for key in [k for k in rank4 if ".lora_A." in k]:
        stored[key.replace(".lora_A.weight", ".alpha")] = torch.tensor(2.0)  # scale 2 / 4 = 0.5
    halved = {k: v * 0.5 if ".lora_B." in k else v for k, v in _zero_padded(rank4, 16).items()}
    merged_alpha = load_model(_with_lora(golden, tmp_path / "alpha", stored)).unet.state_dict()
    assert "stores its own alpha" in capsys.readouterr().err
    merged_half = load_model(_with_lora(golden, tmp_path / "half", halved)).unet.state_dict()
    for key in merged_half:
        torch.testing.assert_close(merged_alpha[key], merged_half[key], atol=1e-6, rtol=0)
    assert (merged_alpha[name] - merged4[name]).abs().max() > 1e-4


def test_older_lora_key_formats_read_the_same(golden, tmp_path):
    peft = read_lora(golden[0] / LORA_FILE)
    old, processor = {}, {}
    for name, pair in peft.items():
        old[f"unet.{name}.lora.down.weight"], old[f"unet.{name}.lora.up.weight"] = pair.down, pair.up
        attn, _, proj = name.removesuffix(".0").rpartition(".")
        if proj in ("to_q", "to_k", "to_v", "to_out"):
            processor[f"{attn}.processor.{proj}_lora.down.weight"] = pair.down
            processor[f"{attn}.processor.{proj}_lora.up.weight"] = pair.up
    save_file(old, str(tmp_path / "old.safetensors"))
    save_file(processor, str(tmp_path / "proc.safetensors"))
    assert set(read_lora(tmp_path / "old.safetensors")) == set(peft)
    proc = read_lora(tmp_path / "proc.safetensors")
    assert len(proc) == len(processor) // 2 > 0 and set(proc) <= set(peft)
    for name, pair in proc.items():
        assert torch.equal(pair.down, peft[name].down) and torch.equal(pair.up, peft[name].up)


def _walk_select(z: torch.Tensor, codebook: torch.Tensor, count: int):
    """The selection spelled out per image: positions by distance to their nearest code, first distinct codes."""
    all_codes = []
    for image in z:
        d = (image ** 2).sum(1, keepdim=True) + (codebook ** 2).sum(1) - 2 * image @ codebook.t()
        values, nearest = d.min(dim=1)
        chosen = []
        for p in torch.argsort(values, stable=True).tolist():
            if int(nearest[p]) not in chosen:
                chosen.append(int(nearest[p]))
            if len(chosen) == count:
                break
        all_codes.append(chosen)
    return torch.tensor(all_codes)


@pytest.mark.parametrize("n_codes", [300, 1024])
def test_code_order_with_many_distinct_codes(n_codes):
    """The golden crops choose only 6 and 7 distinct codes; the published model chooses 77 of 1024, so the
    order among many codes is checked here."""
    g = torch.Generator().manual_seed(n_codes)
    z = torch.randn(5, 256, 16, generator=g)
    codebook = torch.randn(n_codes, 16, generator=g)
    codes, valid = select_distinct_codes(z, codebook, 77)
    assert valid.all()
    assert torch.equal(codes, _walk_select(z, codebook, 77))


def test_missing_files_list_the_expected_layout(tmp_path):
    (tmp_path / "embedding_change_weights.pth").write_bytes(b"")
    with pytest.raises(ReelfaceError) as err:
        get_restorer(_cfg(tmp_path, base_model=str(tmp_path / "nowhere")).restore)
    text = str(err.value)
    assert "associate_2.ckpt" in text and "pytorch_lora_weights.safetensors" in text
    assert "Expected layout" in text and "unet/config.json" in text and "reelface models download osdface" in text


def test_base_model_in_its_own_folder(golden, tmp_path):
    for name in [*OSDFACE_FILES, SPEC_FILE]:
        (tmp_path / name).symlink_to(golden[0] / name)
    model = load_model(_cfg(tmp_path, base_model=str(golden[0])).restore)
    assert model.unet.config.cross_attention_dim == golden[1]["prompt_embeds"].shape[-1]
    with pytest.raises(ReelfaceError, match="SD 2.1-base|Stable Diffusion 2.1-base"):
        load_model(_cfg(tmp_path, base_model="someone/not-in-the-cache").restore)


def test_wrong_or_corrupt_weights_are_clear_errors(golden, tmp_path):
    folder = golden[0]
    for name in [*OSDFACE_FILES, SPEC_FILE]:
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


class _HyperParameters:
    """Stands for the omegaconf/argparse objects a Lightning checkpoint carries beside its weights."""

    def __init__(self):
        self.lr = 1e-4


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


def test_models_command_shows_presence(golden, capsys):
    folder = golden[0]
    assert main(["models", "--set", "restore.restorer=osdface", "--set", f"restore.weights={folder}"]) == 0
    out = capsys.readouterr().out
    for name in ("fusion", "osdface", "onnx", "identity"):
        assert f"{name}:" in out
    osdface = out.split("osdface:")[1].split("onnx:")[0]
    assert "MISSING" not in osdface and osdface.count("present") == 4 and str(folder) in osdface


def test_vae_memory_options_take_effect(golden):
    restorer = get_restorer(_cfg(golden[0], vae_tiling="true", vae_slicing="true", batch_size=0).restore)
    vae = restorer.model.vae
    assert vae.use_tiling and vae.use_slicing and vae.tile_sample_min_size == 256 and vae.tile_latent_min_size == 32
    assert restorer.batch_size is None and restorer._fit_batch_size() == 4  # batch_size 0 on the CPU: the default


def test_download_reports_what_is_left_to_do(golden, tmp_path, capsys):
    args = ["models", "download", "osdface", "--set", "restore.restorer=osdface",
            "--set", f"restore.base_model={golden[0]}", "--set", f"restore.weights={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "using the local folder" in out and "still missing" in out and "associate_2.ckpt" in out
