"""`reelface restore` / `reelface probe` through pipeline.cli.main: bad inputs and outputs, exit codes."""

import json
import os
import shutil
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from bad_media import audio_only
from pipeline import synth
from pipeline.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """3 s, 64x48, H.264 + AAC in MP4 with the index (moov) first, so a cut file still opens."""
    d = tmp_path_factory.mktemp("cli_clip")
    rng = np.random.default_rng(0)
    photo = np.repeat(np.repeat((rng.random((30, 40, 3)) * 255).astype(np.uint8), 4, 0), 4, 1)
    frames = synth.clean_clip(photo, 90, (64, 48))[0]
    plain = synth.write_clip(d / "plain.mp4", frames, synth.ClipSpec(audio=[synth.AudioTrack()]))
    faststart = d / "clip.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(plain),
                    "-map", "0", "-c", "copy", "-movflags", "+faststart", str(faststart)], check=True)
    return faststart


def _restore(capsys, src, out, *extra):
    return _run(capsys, "restore", str(src), "-o", str(out), "--restorer", "identity",
                "--set", "encode.preset=ultrafast", *extra)


def test_restore_and_probe_work(capsys, clip, tmp_path):
    code, _, err = _restore(capsys, clip, tmp_path / "out.mp4")
    assert code == 0 and "warning" not in err
    code, out, _ = _run(capsys, "probe", str(tmp_path / "out.mp4"))
    assert code == 0 and json.loads(out)["frame_count"] == 90
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def _cut(src, dst, fraction):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _scrambled(src, dst):
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("case,message", [
    ("missing", "input file not found"),
    ("text", "is not a video file"),
    ("audio_only", "has no video stream"),
    ("truncated", "is truncated"),
    ("moov_missing", "truncated or corrupt"),
    ("corrupt", "corrupt"),
])
def test_bad_inputs(capsys, clip, tmp_path, case, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = {
        "missing": lambda: inputs / "nope.mp4",
        "text": lambda: (inputs / "notes.mp4").write_text("hello\n" * 200) and inputs / "notes.mp4",
        "audio_only": lambda: audio_only(inputs / "tone.m4a"),
        "truncated": lambda: _cut(clip, inputs / "cut.mp4", 0.5),
        "moov_missing": lambda: _cut(clip, inputs / "cut.mp4", 0.01),
        "corrupt": lambda: _scrambled(clip, inputs / "bad.mp4"),
    }[case]()
    out = tmp_path / "out" / "restored.mp4"
    out.parent.mkdir()
    code, _, err = _restore(capsys, src, out)
    assert code == 2 and message in err, err
    assert list(out.parent.iterdir()) == []  # no output, no partial file, no work dir


def test_output_is_input(capsys, clip, tmp_path, monkeypatch):
    src = tmp_path / "in.mp4"
    shutil.copy(clip, src)
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    monkeypatch.chdir(tmp_path)
    before = src.read_bytes()
    for out in (src, link, "./in.mp4", "../" + tmp_path.name + "/in.mp4"):
        code, _, err = _restore(capsys, src, out, "--overwrite")
        assert code == 2 and "is the input file" in err
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "link.mp4"]


def test_warns_when_the_container_rounds_timestamps(capsys, data_dir, tmp_path):
    code, _, err = _restore(capsys, data_dir / "clips" / "keep_synthetic_1.mp4", tmp_path / "ok.mkv")
    assert code == 0 and "warning" not in err  # 1/20 s frames are whole milliseconds
    code, _, err = _restore(capsys, data_dir / "clips" / "hamilton.mp4", tmp_path / "rounded.mkv")
    assert code == 0 and "1 ms timestamps" in err and "1/11988" in err


def test_existing_output_needs_overwrite(capsys, clip, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    code, _, err = _restore(capsys, clip, out)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"keep me"
    code, _, _ = _restore(capsys, clip, out, "--overwrite")
    assert code == 0 and out.read_bytes()[4:8] == b"ftyp"


def test_unwritable_or_missing_output_dir(capsys, clip, tmp_path):
    code, _, err = _restore(capsys, clip, tmp_path / "no" / "such" / "dir" / "out.mp4")
    assert code == 2 and "does not exist" in err
    if os.geteuid() == 0:  # root writes through permission bits: use a directory no one can write to
        locked = "/proc"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    code, _, err = _restore(capsys, clip, f"{locked}/out.mp4")
    assert code == 2 and "cannot write to the output directory" in err


def test_encoder_or_container_that_cannot_do_it(capsys, clip, tmp_path):
    code, _, err = _restore(capsys, clip, tmp_path / "out.mp4", "--encoder", "ffv2")
    assert code == 2 and "not available" in err
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3
    srt = synth.write_clip(tmp_path / "subs.mkv", frames, synth.ClipSpec(subtitles=[(0, 0.05, "hi")]))
    code, _, err = _restore(capsys, srt, tmp_path / "out.ts")  # MPEG-TS would turn SubRip into a data stream
    assert code == 2 and f"writing {tmp_path / 'out.ts'} failed" in err
    code, _, err = _restore(capsys, srt, tmp_path / "out.mkv", "--encoder", "prores_ks")
    assert code == 0  # mkv holds anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv", "subs.mkv"]
