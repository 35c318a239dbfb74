"""The bad-input and fault matrix: every command, as a new user would type it, on small generated clips.

Each case runs `reelface ...` in-process and must end one of two ways: exit 0 with the output checked,
or exit 2 with one line `reelface: error: ...` naming the problem. Either way no traceback, the inputs
byte for byte as they were, and on exit 2 the output folder exactly as it was (no partial file, no
work dir, nothing overwritten).
"""

import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from pipeline import synth
from pipeline.cli import main
from pipeline.errors import ReelfaceError


def _frames(n, size, seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    photo = np.repeat(np.repeat((rng.random((h // 4 + 1, w // 4 + 1, 3)) * 255).astype(np.uint8), 4, 0), 4, 1)
    return synth.clean_clip(photo, n, (w, h), seed=seed)[0]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Inputs every case may use, made once: clips of several kinds, photos, model and config files."""
    d = tmp_path_factory.mktemp("media")
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    files = {
        # H.264 + AAC (starts at -1024 samples) + mov_text subtitles, 30 fps
        "clip": synth.write_clip(d / "clip.mp4", _frames(24, (64, 48)),
                                 synth.ClipSpec(audio=[synth.AudioTrack()], subtitles=[(0.0, 0.4, "hello")])),
        "odd": synth.write_clip(d / "odd.mkv", _frames(6, (65, 49)), synth.ClipSpec(codec="ffv1")),
        "other_size": synth.write_clip(d / "other.mp4", _frames(24, (48, 32))),
        "srt": synth.write_clip(d / "srt.mkv", _frames(6, (64, 48)), synth.ClipSpec(subtitles=[(0.0, 0.1, "hi")])),
        # a cue that starts late: MP4 fills the time before it with an empty sample, Matroska does not
        "late_srt": synth.write_clip(d / "late.mkv", _frames(24, (64, 48)),
                                     synth.ClipSpec(subtitles=[(0.5, 0.7, "late")])),
        "late_mov_text": synth.write_clip(d / "late.mp4", _frames(24, (64, 48)),
                                          synth.ClipSpec(subtitles=[(0.5, 0.7, "late")])),
    }
    # the frame size changes mid-stream: two MPEG-TS parts joined (as broadcast recordings are)
    first = synth.write_clip(d / "a.ts", _frames(6, (64, 48)), synth.ClipSpec(time_base=Fraction(1, 30)))
    second = synth.write_clip(d / "b.ts", _frames(6, (48, 32), seed=1),
                              synth.ClipSpec(time_base=Fraction(1, 30), pts=list(range(6, 12))))
    files["sizes"] = d / "sizes.ts"
    files["sizes"].write_bytes(first.read_bytes() + second.read_bytes())
    # a font attachment, as Matroska files with styled subtitles carry
    files["attachment"] = d / "attachment.mkv"
    (d / "font.ttf").write_bytes(b"not really a font")
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(files["srt"]), "-map", "0", "-c", "copy",
                    "-attach", str(d / "font.ttf"), "-metadata:s:t", "mimetype=application/x-truetype-font",
                    str(files["attachment"])], check=True)
    # a QuickTime timecode (tmcd) track, as professional cameras write
    files["timecode"] = d / "timecode.mov"
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(files["clip"]), "-map", "0:v", "-map", "0:a",
                    "-c", "copy", "-timecode", "01:00:00:00", str(files["timecode"])], check=True)
    files["not_image"] = d / "face.jpg"
    files["not_image"].write_text("not a photo\n")
    files["bad_onnx"] = d / "model.onnx"
    files["bad_onnx"].write_bytes(b"\x00not an onnx model")
    files["string_yaml"] = d / "string.yaml"
    files["string_yaml"].write_text("just a sentence\n")
    files["bad_yaml"] = d / "bad.yaml"
    files["bad_yaml"].write_text("encode: [unclosed\n")
    return files


FAST = ["--set", "encode.preset=ultrafast"]
IDENTITY = ["--restorer", "identity", *FAST]


def _streams(path):
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams]


def _timecode(path):
    with av.open(str(path)) as c:
        return {k.lower(): v for k, v in c.streams.video[0].metadata.items()}.get("timecode")


def _subtitle_texts(path, codec="srt"):
    """The text of each cue (mov_text: without its length prefix; its empty end-of-cue samples left out)."""
    with av.open(str(path)) as c:
        data = [bytes(p) for p in c.demux(c.streams.subtitles[0]) if p.size]
    return [d[2:] for d in data if d[2:]] if codec == "mov_text" else data


def _cue_times(path, codec="srt"):
    """Start times (s) of the cues that carry text."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.subtitles[0]) if p.size]
        return [float(p.pts * p.time_base) for p in packets if (bytes(p)[2:] if codec == "mov_text" else bytes(p))]


def _video_times(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * p.time_base) for p in c.demux(s) if p.size)


# (case id, argv with {name} for an input and {out} for the output folder, exit code, text the error
# line must hold, files placed in the output folder first)
REFUSED = [
    # restore: config values, refused before any work
    ("strength-nan", ["restore", "{clip}", "-o", "{out}/o.mp4", "--strength", "nan", *IDENTITY], "finite"),
    ("strength-inf", ["restore", "{clip}", "-o", "{out}/o.mp4", "--strength", "inf", *IDENTITY], "finite"),
    ("strength-2", ["restore", "{clip}", "-o", "{out}/o.mp4", "--strength", "2"], "between 0 and 1"),
    ("strength-minus-1", ["restore", "{clip}", "-o", "{out}/o.mp4", "--strength", "-1"], "between 0 and 1"),
    ("strength-abc", ["restore", "{clip}", "-o", "{out}/o.mp4", "--strength", "abc"], "invalid float"),
    ("set-strength-abc", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "blend.strength=abc"],
     "blend.strength must be a number"),
    ("set-threshold-abc", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "detect.threshold=abc"],
     "detect.threshold must be a number"),
    ("set-crf-abc", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "encode.crf=abc"],
     "encode.crf must be a whole"),
    ("set-preset-bogus", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "encode.preset=bogus"], "ultrafast"),
    ("set-unknown-key", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "blend.strenght=1"], "unknown config key"),
    ("set-device", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "restore.device=gpu0"], "cuda:N"),
    ("set-bool", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "run.keep_work_dir=perhaps"], "true or false"),
    ("set-photos-type", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "references.photos=3"], "list of photo"),
    ("chunk-seconds-0", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "run.chunk_seconds=0"], "above 0"),
    ("preview-nan", ["restore", "{clip}", "-o", "{out}/o.mp4", "--preview", "nan", *IDENTITY], "--preview"),
    ("preview-inf", ["restore", "{clip}", "-o", "{out}/o.mp4", "--preview", "inf", *IDENTITY], "--preview"),
    ("preview-0", ["restore", "{clip}", "-o", "{out}/o.mp4", "--preview", "0", *IDENTITY], "above 0"),
    ("config-plain-string", ["restore", "{clip}", "-o", "{out}/o.mp4", "--config", "{string_yaml}"], "mapping"),
    ("config-bad-yaml", ["restore", "{clip}", "-o", "{out}/o.mp4", "--config", "{bad_yaml}"], "not valid YAML"),
    ("config-missing", ["restore", "{clip}", "-o", "{out}/o.mp4", "--config", "nope"], "not found"),
    # restore: inputs the run needs, checked before detection
    ("ref-missing", ["restore", "{clip}", "-o", "{out}/o.mp4", "--ref", "ann={out}/missing.jpg"], "no such file"),
    ("ref-not-image", ["restore", "{clip}", "-o", "{out}/o.mp4", "--ref", "ann={not_image}"], "not an image"),
    ("ref-syntax", ["restore", "{clip}", "-o", "{out}/o.mp4", "--ref", "ann"], "NAME=photo1.jpg"),
    ("onnx-bad-file", ["restore", "{clip}", "-o", "{out}/o.mp4", "--restorer", "onnx", "--set",
                       "restore.weights={bad_onnx}"], "cannot load"),
    ("osdface-missing", ["restore", "{clip}", "-o", "{out}/o.mp4", "--restorer", "osdface", "--set",
                         "restore.weights={out}/none"], "osdface weights are missing"),
    ("unknown-restorer", ["restore", "{clip}", "-o", "{out}/o.mp4", "--restorer", "nosuch"], "unknown restorer"),
    ("odd-size-x264", ["restore", "{odd}", "-o", "{out}/o.mkv", *IDENTITY], "even width and height"),
    ("odd-size-x265", ["restore", "{odd}", "-o", "{out}/o.mkv", "--encoder", "libx265", *IDENTITY], "yuv444p"),
    ("size-change", ["restore", "{sizes}", "-o", "{out}/o.mp4", *IDENTITY], "changes frame size mid-stream at frame 6"),
    ("size-change-default", ["restore", "{sizes}", "-o", "{out}/o.mp4"], "64x48 -> 48x32"),
    # restore: outputs
    ("output-is-input", ["restore", "{clip}", "-o", "{clip}", "--overwrite", *IDENTITY], "is the input file"),
    ("output-exists", ["restore", "{clip}", "-o", "{out}/o.mp4", *IDENTITY], "--overwrite", {"o.mp4": b"keep"}),
    ("report-exists", ["restore", "{clip}", "-o", "{out}/o.mp4"], "o.mp4.report.json already exists",
     {"o.mp4.report.json": b"{}"}),
    ("output-no-suffix", ["restore", "{clip}", "-o", "{out}/o", *IDENTITY], "no file extension"),
    ("output-xyz", ["restore", "{clip}", "-o", "{out}/o.xyz", *IDENTITY], "unknown video container"),
    ("output-dir-missing", ["restore", "{clip}", "-o", "{out}/no/o.mp4", *IDENTITY], "does not exist"),
    ("output-is-dir", ["restore", "{clip}", "-o", "{out}", *IDENTITY], "is a directory"),
    ("output-proc", ["restore", "{clip}", "-o", "/proc/o.mp4", *IDENTITY], "cannot write"),
    ("work-dir-is-file", ["restore", "{clip}", "-o", "{out}/o.mp4", "--work-dir", "{out}/w", *IDENTITY],
     "cannot create the work dir", {"w": b"a file"}),
    ("srt-into-ts", ["restore", "{srt}", "-o", "{out}/o.ts", *IDENTITY], "(subtitle, srt) into a data stream"),
    ("attachment-into-mp4", ["restore", "{attachment}", "-o", "{out}/o.mp4", *IDENTITY],
     "cannot hold stream #2 (attachment"),
    ("ref-is-directory", ["restore", "{clip}", "-o", "{out}/o.mp4", "--ref", "ann={out}"], "a directory"),
    ("h264-into-avi", ["restore", "{other_size}", "-o", "{out}/o.avi", *IDENTITY], "o.avi failed"),
    ("mov-text-into-ts", ["restore", "{clip}", "-o", "{out}/o.ts", *IDENTITY], "into a data stream"),
    # analyze
    ("analyze-preview-is-input", ["analyze", "{clip}", "-o", "{out}/t.json", "--preview", "{clip}"],
     "is the input file"),
    ("analyze-same-outputs", ["analyze", "{clip}", "-o", "{out}/x.mp4", "--preview", "{out}/x.mp4"], "same file"),
    ("analyze-preview-xyz", ["analyze", "{clip}", "-o", "{out}/t.json", "--preview", "{out}/p.xyz"],
     "unknown video container"),
    ("analyze-preview-no-suffix", ["analyze", "{clip}", "-o", "{out}/t.json", "--preview", "{out}/p"],
     "no file extension"),
    ("analyze-preview-dir-missing", ["analyze", "{clip}", "-o", "{out}/t.json", "--preview", "{out}/no/p.mp4"],
     "does not exist"),
    ("analyze-output-dir", ["analyze", "{clip}", "-o", "{out}"], "is a directory"),
    ("analyze-output-proc", ["analyze", "{clip}", "-o", "/proc/x.json"], "cannot write"),
    ("analyze-output-exists", ["analyze", "{clip}", "-o", "{out}/t.json"], "--overwrite", {"t.json": b"[]"}),
    ("analyze-threshold-abc", ["analyze", "{clip}", "-o", "{out}/t.json", "--set", "detect.threshold=abc"],
     "detect.threshold must be a number"),
    ("analyze-size-change", ["analyze", "{sizes}", "-o", "{out}/t.json"], "changes frame size"),
    # evaluate
    ("evaluate-other-size", ["evaluate", "{other_size}", "--input", "{clip}"], "compare the same clip"),
    ("evaluate-size-change", ["evaluate", "{sizes}", "--input", "{sizes}"], "changes frame size"),
    ("evaluate-out-dir-is-file", ["evaluate", "{clip}", "--input", "{clip}", "--out-dir", "{out}/f"], "is a file",
     {"f": b"x"}),
    ("evaluate-out-exists", ["evaluate", "{clip}", "--input", "{clip}", "--out-dir", "{out}"], "--overwrite",
     {"evaluation.json": b"{}"}),
    ("evaluate-missing", ["evaluate", "{out}/none.mp4", "--input", "{clip}"], "not found"),
    # more of the same kinds
    ("preview-negative", ["restore", "{clip}", "-o", "{out}/o.mp4", "--preview", "-1", *IDENTITY], "above 0"),
    ("context-frames-negative", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "run.context_frames=-1"],
     "at least 0"),
    ("crf-out-of-range", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "encode.crf=99"], "between 0 and 51"),
    ("pix-fmt-unknown", ["restore", "{clip}", "-o", "{out}/o.mp4", "--set", "encode.pix_fmt=yuv999p", *IDENTITY],
     "cannot write pixel format"),
    ("output-is-ref-photo", ["restore", "{clip}", "-o", "{not_image}", "--ref", "ann={not_image}"],
     "is the input file"),
    ("work-dir-is-input", ["restore", "{clip}", "-o", "{out}/o.mp4", "--work-dir", "{clip}", *IDENTITY],
     "cannot create the work dir"),
    ("analyze-stride-0", ["analyze", "{clip}", "-o", "{out}/t.json", "--set", "detect.stride=0"], "at least 1"),
    ("evaluate-truth-other-size", ["evaluate", "{clip}", "--input", "{clip}", "--ground-truth", "{other_size}"],
     "compare the same clip"),
    ("probe-missing", ["probe", "{out}/none.mp4"], "not found"),
    ("models-download-no-name", ["models", "download"], "reelface models download NAME"),
    # usage
    ("usage-missing-output", ["restore", "{clip}"], "-o/--output"),
    ("usage-unknown-command", ["restor", "{clip}"], "invalid choice"),
]

ACCEPTED = [
    # (case id, argv, check(out folder, media) -> None)
    ("mov-text-into-mkv", ["restore", "{clip}", "-o", "{out}/o.mkv", *IDENTITY],
     lambda out, m: (_assert(_streams(out / "o.mkv") == [("video", "h264"), ("audio", "aac"), ("subtitle", "srt")]),
                     _assert(_subtitle_texts(out / "o.mkv") == [b"hello"]),
                     _assert(np.allclose(_video_times(out / "o.mkv"), _video_times(m["clip"]), atol=5e-4)))),
    ("srt-into-mp4", ["restore", "{srt}", "-o", "{out}/o.mp4", *IDENTITY],
     lambda out, m: (_assert(_streams(out / "o.mp4") == [("video", "h264"), ("subtitle", "mov_text")]),
                     _assert(_subtitle_texts(out / "o.mp4", "mov_text") == [b"hi"]))),
    ("late-cue-into-mp4", ["restore", "{late_srt}", "-o", "{out}/o.mp4", *IDENTITY],
     lambda out, m: _assert(_cue_times(out / "o.mp4", "mov_text") == [0.5])),
    ("late-cue-into-mkv", ["restore", "{late_mov_text}", "-o", "{out}/o.mkv", *IDENTITY],
     lambda out, m: _assert(_cue_times(out / "o.mkv") == [0.5])),
    ("aac-into-mkv-keeps-times", ["restore", "{clip}", "-o", "{out}/o.mkv", "--set", "encode.codec=ffv1", *IDENTITY],
     lambda out, m: _assert(_video_times(out / "o.mkv")[0] == 0.0)),
    ("aac-into-ts-keeps-times", ["restore", "{timecode}", "-o", "{out}/o.ts", "--set", "encode.preset=veryfast",
                                 "--restorer", "identity"],
     lambda out, m: _assert(np.allclose(_video_times(out / "o.ts"), _video_times(m["timecode"]), atol=2e-5))),
    ("attachment-into-mkv", ["restore", "{attachment}", "-o", "{out}/o.mkv", *IDENTITY],
     lambda out, m: _assert([k for k, _ in _streams(out / "o.mkv")] == ["video", "subtitle", "attachment"])),
    ("timecode-mov", ["restore", "{timecode}", "-o", "{out}/o.mov", *IDENTITY],
     lambda out, m: _assert(_timecode(out / "o.mov") == "01:00:00:00" and ("data", None) in _streams(out / "o.mov"))),
    ("timecode-mp4", ["restore", "{timecode}", "-o", "{out}/o.mp4", *IDENTITY],
     lambda out, m: _assert(_timecode(out / "o.mp4") == "01:00:00:00")),
    ("timecode-mkv", ["restore", "{timecode}", "-o", "{out}/o.mkv", *IDENTITY],
     lambda out, m: _assert(_timecode(out / "o.mkv") == "01:00:00:00")),
    ("odd-size-ffv1", ["restore", "{odd}", "-o", "{out}/o.mkv", "--encoder", "ffv1", *IDENTITY],
     lambda out, m: _assert(_video_times(out / "o.mkv") == _video_times(m["odd"]))),
    ("odd-size-x264-444", ["restore", "{odd}", "-o", "{out}/o.mkv", "--set", "encode.pix_fmt=yuv444p", *IDENTITY],
     lambda out, m: _assert(_video_times(out / "o.mkv") == _video_times(m["odd"]))),
    ("keep-work-dir", ["restore", "{clip}", "-o", "{out}/o.mp4", "--keep-work-dir", *IDENTITY],
     lambda out, m: _assert((out / "o.mp4.work" / "manifest.json").is_file())),
    ("overwrite", ["restore", "{clip}", "-o", "{out}/o.mp4", "--overwrite", *IDENTITY],
     lambda out, m: _assert((out / "o.mp4").read_bytes()[4:8] == b"ftyp"), {"o.mp4": b"old"}),
    ("identity-leaves-report-alone", ["restore", "{clip}", "-o", "{out}/o.mp4", *IDENTITY],
     lambda out, m: _assert((out / "o.mp4.report.json").read_bytes() == b"{}"), {"o.mp4.report.json": b"{}"}),
    ("spaces-in-names", ["restore", "{clip}", "-o", "{out}/my out é.mp4", "--strength", "0.5", *IDENTITY],
     lambda out, m: _assert(len(_video_times(out / "my out é.mp4")) == 24)),
    ("strength-0", ["restore", "{clip}", "-o", "{out}/o.mp4", "--strength", "0", *IDENTITY],
     lambda out, m: _assert((out / "o.mp4").is_file())),
    ("analyze-with-preview", ["analyze", "{clip}", "-o", "{out}/t.json", "--preview", "{out}/p.mp4"],
     lambda out, m: _assert(len(_video_times(out / "p.mp4")) == 24 and (out / "t.json").is_file())),
]


def _assert(condition):
    assert condition


def _argv(template, media, out):
    names = {**{k: str(v) for k, v in media.items()}, "out": str(out)}
    return [part.format(**names) for part in template]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def _prepare(tmp_path, media, setup):
    """The output folder with the case's files in it, and the inputs' bytes to compare afterwards."""
    out = tmp_path / "out"
    out.mkdir()
    for name, data in (setup[0] if setup else {}).items():
        (out / name).write_bytes(data)
    return out, {k: v.read_bytes() for k, v in media.items()}


def _run(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself
        code = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return code, captured.err


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_one_line_and_nothing_touched(case, media, tmp_path, capsys):
    _, template, message, *setup = case
    out, inputs = _prepare(tmp_path, media, setup)
    before = _snapshot(out)
    code, err = _run(capsys, _argv(template, media, out))
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("reelface: error: ") and message in lines[0], err
    assert _snapshot(out) == before
    assert {k: v.read_bytes() for k, v in media.items()} == inputs


@pytest.mark.parametrize("case", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_and_correct(case, media, tmp_path, capsys):
    _, template, check, *setup = case
    out, inputs = _prepare(tmp_path, media, setup)
    code, err = _run(capsys, _argv(template, media, out))
    assert code == 0, err
    check(out, media)
    assert not [p for p in out.iterdir() if "partial" in p.name]
    assert {k: v.read_bytes() for k, v in media.items()} == inputs


def test_the_input_is_never_the_output_by_another_name(media, tmp_path, capsys, monkeypatch):
    """A link to the input, ./name and ../dir/name all point at the input: refused, input unchanged."""
    src = tmp_path / "in.mp4"
    shutil.copy(media["clip"], src)
    (tmp_path / "link.mp4").symlink_to(src)
    monkeypatch.chdir(tmp_path)
    before = src.read_bytes()
    for name in ("link.mp4", "./in.mp4", f"../{tmp_path.name}/in.mp4"):
        for argv in (["restore", "in.mp4", "-o", name, "--overwrite", *IDENTITY],
                     ["analyze", "in.mp4", "-o", "t.json", "--preview", name, "--overwrite"]):
            code, err = _run(capsys, argv)
            assert code == 2 and "is the input file" in err, err
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "link.mp4"]


@pytest.mark.parametrize("argv", [
    ["restore", "{odd}", "-o", "{out}/o.mkv", "--encoder", "libx265", *IDENTITY],  # x265 logs on its own
    ["restore", "{clip}", "-o", "{out}/o.mp4", "--restorer", "osdface", "--set", "restore.weights={out}/none"],
], ids=["x265-odd-size", "osdface-missing"])
def test_one_line_on_the_process_stderr(argv, media, tmp_path):
    """The whole process's stderr, native libraries included, is the one error line."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *_argv(argv, media, out)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("reelface: error: "), result.stderr
    assert list(out.iterdir()) == []


def test_a_bug_is_one_line_with_exit_1_unless_debugging(media, tmp_path, capsys, monkeypatch):
    """An unexpected exception is a bug, not bad input: one line naming it, exit 1; REELFACE_DEBUG=1
    lets the traceback through."""
    def broken(*args, **kwargs):
        raise RuntimeError("stage exploded\nsecond line")

    monkeypatch.setattr("pipeline.video.probe", broken)
    code, err = _run(capsys, ["probe", str(media["clip"])])
    assert code == 1 and err.strip().splitlines() == [
        "reelface: internal error: RuntimeError: stage exploded (a bug: rerun with REELFACE_DEBUG=1 for the "
        "traceback and report it)"]
    monkeypatch.setenv("REELFACE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="stage exploded"):
        main(["probe", str(media["clip"])])


def test_a_failed_assembly_says_how_to_reuse_the_work(media, tmp_path, capsys, monkeypatch):
    """When only the final assembly fails (a container problem the first frames did not show), the same
    command would fail again: the message says how to assemble the kept work into another container,
    and doing so redoes none of it."""
    from pipeline import mux

    real = mux.assemble

    def fails_at_the_end(segments, source, output, info, frame_count=None, *args, **kwargs):
        if frame_count is None:  # the real assembly, not the rehearsal
            raise ReelfaceError("the .mp4 container moves stream #9")
        return real(segments, source, output, info, frame_count, *args, **kwargs)

    monkeypatch.setattr(mux, "assemble", fails_at_the_end)
    out = tmp_path / "o.mp4"
    code, err = _run(capsys, ["restore", str(media["clip"]), "-o", str(out), *IDENTITY])
    work = tmp_path / "o.mp4.work"
    assert code == 2 and f"--work-dir {work}" in err and "o.mkv" in err and not out.exists(), err
    monkeypatch.setattr(mux, "assemble", real)
    code, err = _run(capsys, ["restore", str(media["clip"]), "-o", str(tmp_path / "o.mkv"), "--work-dir", str(work),
                              *IDENTITY])
    assert code == 0 and "resum" in err, err  # the kept segments were used
    assert len(_video_times(tmp_path / "o.mkv")) == 24


def test_a_work_dir_in_use_is_refused_and_left_alone(media, tmp_path, capsys):
    """Issue 13's lock seen from the command line: a second run on a work dir that another run holds is
    refused in one line, and neither the work dir nor the output folder changes."""
    import fcntl

    work = tmp_path / "o.mp4.work"
    work.mkdir()
    held = os.open(work / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(held, b"4242\n")
    before = _snapshot(tmp_path)
    try:
        code, err = _run(capsys, ["restore", str(media["clip"]), "-o", str(tmp_path / "o.mp4"), *IDENTITY])
    finally:
        os.close(held)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another reelface run" in err, err
    assert _snapshot(tmp_path) == before


def test_a_relative_output_resumes_from_its_work_dir(media, tmp_path, capsys, monkeypatch):
    """Issue 13's relative paths seen from the command line: `-o o.mp4` from the output's folder, stopped
    at assembly, then rerun with relative paths: the kept work is found and used."""
    from pipeline import mux

    real = mux.assemble

    def fails_at_the_end(segments, source, output, info, frame_count=None, *args, **kwargs):
        if frame_count is None:
            raise ReelfaceError("the container moves stream #9")
        return real(segments, source, output, info, frame_count, *args, **kwargs)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mux, "assemble", fails_at_the_end)
    code, _ = _run(capsys, ["restore", str(media["clip"]), "-o", "o.mp4", *IDENTITY])
    assert code == 2 and (tmp_path / "o.mp4.work").is_dir()
    monkeypatch.setattr(mux, "assemble", real)
    rendered = []
    monkeypatch.setattr("pipeline.stages.render_stage", lambda *a, **k: rendered.append(a))
    code, err = _run(capsys, ["restore", str(media["clip"]), "-o", "o.mkv", "--work-dir", "o.mp4.work", *IDENTITY])
    assert code == 0 and "resum" in err and rendered == [], err  # no chunk restored again
