"""The onnx restorer on tiny ONNX graphs with the signatures of the face restorers people have (GFPGAN 1.4,
CodeFormer, GPEN-BFR 256/512/1024, RestoreFormer++), built here: no download, no exporter needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pipeline.cli import main  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.errors import ReelfaceError  # noqa: E402
from pipeline.restorers import get_restorer  # noqa: E402
from pipeline.video import decode  # noqa: E402
from ray_clips import two_faces  # noqa: E402

SIZE = 512
# name -> (image input, its side, fidelity input or None); the names are the ones their ONNX exports use
FAMILIES = {
    "gfpgan_1.4": ("input", 512, None),
    "restoreformer_plus_plus": ("input", 512, None),
    "gpen_bfr_256": ("input", 256, None),
    "gpen_bfr_512": ("input", 512, None),
    "gpen_bfr_1024": ("input", 1024, None),
    "codeformer": ("x", 512, "w"),
    "codeformer_facefusion": ("input", 512, "weight"),
}


def _weights(seed: int = 0):
    g = np.random.default_rng(seed)
    return g.normal(0, 0.2, (3, 3, 3, 3)).astype(np.float32), g.normal(0, 0.1, 3).astype(np.float32)


def write_model(path, image="input", size=SIZE, batch="N", fidelity=None, fidelity_shape=(), extra=None, seed=0,
                negate=False):
    """A face restorer's signature: image (batch, 3, size, size) in [-1, 1] -> tanh(conv3x3(x) [* w]) in
    [-1, 1]. `fidelity` names CodeFormer's scalar double weight input; `extra` adds one more image input;
    `negate` makes the conv -x, a restoration nobody can miss in a video."""
    weight, bias = _weights(seed)
    if negate:
        weight, bias = np.zeros_like(weight), np.zeros_like(bias)
        weight[[0, 1, 2], [0, 1, 2], 1, 1] = -3.0  # tanh(-3x): about -x, saturated
    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, [batch, 3, size, size])]
    nodes = [helper.make_node("Conv", [image, "W", "B"], ["conv"], pads=[1, 1, 1, 1])]
    last = "conv"
    if fidelity:
        inputs.append(helper.make_tensor_value_info(fidelity, TensorProto.DOUBLE, list(fidelity_shape)))
        nodes += [helper.make_node("Cast", [fidelity], ["wf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["conv", "wf"], ["scaled"])]
        last = "scaled"
    if extra:
        inputs.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT, [batch, 3, size, size]))
        nodes.append(helper.make_node("Add", [last, extra], ["summed"]))
        last = "summed"
    nodes.append(helper.make_node("Tanh", [last], ["output"]))
    graph = helper.make_graph(nodes, "face", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])],
                              [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return torch.from_numpy(weight), torch.from_numpy(bias)


def write_family(path, family, negate=False):
    image, size, fidelity = FAMILIES[family]
    return write_model(path, image=image, size=size, batch=1, fidelity=fidelity,
                       fidelity_shape=[1] if fidelity == "weight" else [], negate=negate)


def _reference(crops, weight, bias, w=1.0):
    return (torch.tanh(F.conv2d(crops * 2 - 1, weight, bias, padding=1) * w) + 1) / 2


def _cfg(path, **restore):
    values = dict(restorer="onnx", weights=str(path), device="cpu")
    values.update(restore)
    return load_config("default", [f"restore.{k}={v}" for k, v in values.items()]).restore


def _faces(n, seed=0):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_recognised_from_its_inputs(tmp_path, family):
    image, size, fidelity = FAMILIES[family]
    weight, bias = write_family(tmp_path / f"{family}.onnx", family)
    restorer = get_restorer(_cfg(tmp_path / f"{family}.onnx", fidelity=0.3, batch_size=4))
    sig = restorer.signature
    assert (sig.image, sig.size, sig.fidelity, sig.fixed_batch, restorer.batch_size) == (image, size, fidelity, 1, 1)
    expected_family = {"gpen_bfr_256": "GPEN-BFR-256", "gpen_bfr_1024": "GPEN-BFR-1024"}.get(
        family, "CodeFormer" if fidelity else "GFPGAN 1.4 / GPEN-BFR-512 / RestoreFormer++")
    assert sig.family == expected_family
    crops = _faces(2, seed=1)
    out = restorer.restore(crops, None)
    assert out.shape == crops.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    if size == SIZE:  # CodeFormer gets restore.fidelity as its w
        torch.testing.assert_close(out, _reference(crops, weight, bias, 0.3 if fidelity else 1.0), atol=1e-5, rtol=0)


def test_dynamic_batch_model_runs_in_batches(tmp_path):
    weight, bias = write_model(tmp_path / "gfpgan.onnx")
    restorer = get_restorer(_cfg(tmp_path / "gfpgan.onnx", batch_size=2))
    assert restorer.batch_size == 2 and restorer.signature.fixed_batch is None
    crops = _faces(5)
    out = restorer.restore(crops, None)
    torch.testing.assert_close(out, _reference(crops, weight, bias), atol=1e-5, rtol=0)
    assert torch.equal(restorer.restore(crops, None), out)
    assert restorer.restore(crops[:0], None).shape == (0, 3, SIZE, SIZE)


@pytest.mark.parametrize("size", [256, 1024])
def test_other_sizes_are_resized_both_ways(tmp_path, size):
    write_model(tmp_path / "gpen.onnx", size=size)
    restorer = get_restorer(_cfg(tmp_path / "gpen.onnx"))
    crops = torch.full((1, 3, SIZE, SIZE), 0.5)
    out = restorer.restore(crops, None)
    assert out.shape == (1, 3, SIZE, SIZE)
    assert (out[..., 8:-8, 8:-8].std(dim=(2, 3)) < 1e-3).all()  # a flat face stays flat away from the border


@pytest.mark.parametrize("case", [
    dict(image="image"),  # an unknown input name
    dict(size=384),  # no family has that side
    dict(extra="other"),  # a second image
    dict(fidelity="w", size=256),  # a fidelity weight on a model that is not CodeFormer's size
    dict(fidelity="strength"),  # an unknown scalar
])
def test_unknown_signature_is_one_clear_line(tmp_path, case):
    write_model(tmp_path / "odd.onnx", **case)
    with pytest.raises(ReelfaceError, match="the signature of no face restorer this backend knows") as err:
        get_restorer(_cfg(tmp_path / "odd.onnx"))
    assert "\n" not in str(err.value) and "CodeFormer" in str(err.value)


def test_bad_models_and_paths_are_clear_errors(tmp_path):
    with pytest.raises(ReelfaceError, match="not found"):
        get_restorer(_cfg(tmp_path / "missing.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ReelfaceError, match="cannot load"):
        get_restorer(_cfg(tmp_path / "junk.onnx"))


def test_default_folder_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("REELFACE_HOME", str(tmp_path))
    cfg = _cfg("null")
    with pytest.raises(ReelfaceError, match="no .onnx file"):
        get_restorer(cfg)
    (tmp_path / "models" / "onnx").mkdir(parents=True)
    write_model(tmp_path / "models" / "onnx" / "mine.onnx")
    assert get_restorer(cfg).path.name == "mine.onnx"


def test_cuda_device_without_cuda_provider_is_refused(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    write_model(tmp_path / "m.onnx")
    with pytest.raises(ReelfaceError, match="no CUDA provider"):
        get_restorer(_cfg(tmp_path / "m.onnx", device="cuda"))


@pytest.fixture(scope="module")
def clip(data_dir, tmp_path_factory):
    return two_faces(data_dir / "faces", tmp_path_factory.mktemp("onnx_clip") / "two.mp4", frames=6, gop=6)


def _changed_fraction(src, out) -> float:
    """The share of pixels moved by more than 32 levels: re-encoding this clip unchanged moves none that far
    (at most 20), a face pasted from the negating model about 3% of the frame (faces, feathered)."""
    pairs = list(zip(decode(src), decode(out), strict=True))
    return float(np.mean([np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max(-1) > 32 for a, b in pairs]))


@pytest.mark.parametrize("family", ["gfpgan_1.4", "codeformer", "gpen_bfr_256", "gpen_bfr_1024"])
def test_cli_restores_with_each_signature(clip, tmp_path, family, capsys):
    """`reelface restore --restorer onnx` on a short two-face clip, cut half way (tracks confirmed after two
    frames). GPEN-BFR-512 and RestoreFormer++ have GFPGAN's signature."""
    write_family(tmp_path / f"{family}.onnx", family, negate=True)
    out = tmp_path / "out.mp4"
    code = main(["restore", str(clip), "-o", str(out), "--restorer", "onnx",
                 "--set", f"restore.weights={tmp_path / f'{family}.onnx'}", "--set", "restore.device=cpu",
                 "--set", "restore.fidelity=0.8", "--set", "track.min_hits=2", "--set", "encode.preset=ultrafast",
                 "--set", "run.report=false"])
    assert code == 0, capsys.readouterr().err
    assert 0.01 < _changed_fraction(clip, out) < 0.5  # the faces were replaced, the rest was not


def test_cli_refuses_an_unknown_signature_before_any_work(clip, tmp_path, capsys):
    write_model(tmp_path / "odd.onnx", size=384)
    out = tmp_path / "out.mp4"
    code = main(["restore", str(clip), "-o", str(out), "--restorer", "onnx",
                 "--set", f"restore.weights={tmp_path / 'odd.onnx'}", "--set", "restore.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "the signature of no face restorer" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.onnx"]
