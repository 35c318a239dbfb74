import pytest

from pipeline.cli import main
from pipeline.config import PRESET_DIR, load_config
from pipeline.errors import ReelfaceError


def test_presets_load_and_differ():
    default = load_config("default")
    assert default.restore.restorer == "fusion"
    assert load_config("archival").encode.codec == "ffv1"
    assert load_config("fast").detect.stride == 3
    assert load_config("cluster").run.executor == "ray"
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} >= {"default", "archival", "fast", "cluster"}


def test_default_yaml_documents_every_key():
    """The default preset is the documentation: it must name every key of every section."""

    import yaml

    written = yaml.safe_load((PRESET_DIR / "default.yaml").read_text())
    cfg = load_config("default").to_dict()
    assert written == cfg


def test_overrides_are_typed_and_ordered():
    cfg = load_config("default", ["blend.strength=0.25", "restore.batch_size=8", "blend.strength=0.5"])
    assert cfg.blend.strength == 0.5
    assert cfg.restore.batch_size == 8
    assert load_config("default", ["run.address=null"]).run.address is None


def test_digest_tracks_changes():
    a, b = load_config("default"), load_config("default", ["blend.strength=0.3"])
    assert a.digest() != b.digest()
    assert a.digest("detect", "track") == b.digest("detect", "track")


@pytest.mark.parametrize("override", ["blend.strenght=1", "nosection.x=1", "blend=3", "novalue"])
def test_bad_overrides_are_clear(override):
    with pytest.raises(ReelfaceError):
        load_config("default", [override])


def test_unknown_preset_lists_known(tmp_path):
    with pytest.raises(ReelfaceError, match="archival"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("encode: [unclosed")
    with pytest.raises(ReelfaceError, match="not valid YAML"):
        load_config(bad)


def test_cli_reports_config_errors_without_traceback(capsys, tmp_path):
    assert main(["models", "--set", "bogus.key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reelface: error: unknown config key") and "Traceback" not in err
