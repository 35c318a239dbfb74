"""The onnx restorer on tiny face-restorer-shaped ONNX graphs built here (no download, no exporter needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.errors import ReelfaceError  # noqa: E402
from pipeline.restorers import get_restorer  # noqa: E402

SIZE = 512


def _weights(seed: int = 0):
    g = np.random.default_rng(seed)
    return g.normal(0, 0.2, (3, 3, 3, 3)).astype(np.float32), g.normal(0, 0.1, 3).astype(np.float32)


def write_model(path, batch="N", size=SIZE, fidelity_input=False, second_image=False, seed=0):
    """GFPGAN-shaped: 'input' (batch, 3, size, size) in [-1, 1] -> tanh(conv3x3(x) [* w]) in [-1, 1].
    fidelity_input adds CodeFormer's scalar double input 'w'."""
    weight, bias = _weights(seed)
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])]
    nodes = [helper.make_node("Conv", ["input", "W", "B"], ["conv"], pads=[1, 1, 1, 1])]
    last = "conv"
    if fidelity_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.DOUBLE, []))
        nodes += [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["conv", "wf"], ["scaled"])]
        last = "scaled"
    if second_image:
        inputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [batch, 3, size, size]))
        nodes.append(helper.make_node("Add", [last, "other"], ["summed"]))
        last = "summed"
    nodes.append(helper.make_node("Tanh", [last], ["output"]))
    graph = helper.make_graph(nodes, "face", inputs,
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])],
                              [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return torch.from_numpy(weight), torch.from_numpy(bias)


def _reference(crops, weight, bias, w=1.0):
    return (torch.tanh(F.conv2d(crops * 2 - 1, weight, bias, padding=1) * w) + 1) / 2


def _cfg(path, **restore):
    values = dict(restorer="onnx", weights=str(path), device="cpu")
    values.update(restore)
    return load_config("default", [f"restore.{k}={v}" for k, v in values.items()]).restore


def _faces(n, seed=0):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_dynamic_batch_model_matches_reference_in_batches(tmp_path):
    weight, bias = write_model(tmp_path / "gfpgan.onnx")
    restorer = get_restorer(_cfg(tmp_path / "gfpgan.onnx", batch_size=2))
    crops = _faces(5)
    out = restorer.restore(crops, None)
    assert out.shape == crops.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, _reference(crops, weight, bias), atol=1e-5, rtol=0)
    assert torch.equal(restorer.restore(crops, None), out)
    assert restorer.restore(crops[:0], None).shape == (0, 3, SIZE, SIZE)


def test_fixed_batch_with_fidelity_input(tmp_path):
    weight, bias = write_model(tmp_path / "codeformer.onnx", batch=1, fidelity_input=True)
    restorer = get_restorer(_cfg(tmp_path / "codeformer.onnx", fidelity=0.3))
    assert restorer.batch_size == 1 and restorer.input_name == "input"
    crops = _faces(2, seed=1)
    torch.testing.assert_close(restorer.restore(crops, None), _reference(crops, weight, bias, 0.3), atol=1e-5, rtol=0)


def test_smaller_model_input_is_resized_both_ways(tmp_path):
    write_model(tmp_path / "gpen256.onnx", size=256)
    restorer = get_restorer(_cfg(tmp_path / "gpen256.onnx"))
    assert restorer.size == (256, 256)
    crops = torch.full((1, 3, SIZE, SIZE), 0.5)
    out = restorer.restore(crops, None)
    assert out.shape == (1, 3, SIZE, SIZE)
    assert (out[..., 8:-8, 8:-8].std(dim=(2, 3)) < 1e-3).all()  # a flat face stays flat away from the border


def test_bad_models_and_paths_are_clear_errors(tmp_path):
    with pytest.raises(ReelfaceError, match="not found"):
        get_restorer(_cfg(tmp_path / "missing.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ReelfaceError, match="cannot load"):
        get_restorer(_cfg(tmp_path / "junk.onnx"))
    write_model(tmp_path / "two.onnx", second_image=True)
    with pytest.raises(ReelfaceError, match="exactly one float NCHW image input"):
        get_restorer(_cfg(tmp_path / "two.onnx"))


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
