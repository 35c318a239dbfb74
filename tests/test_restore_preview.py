"""`reelface restore --preview` (side by side of the first seconds) and the sidecar report."""

import json

from pipeline.cli import main
from pipeline.video import decode, probe


def test_preview_is_side_by_side_with_a_report(data_dir, tmp_path):
    clip = data_dir / "clips" / "keep_real_1.mp4"
    out = tmp_path / "preview.mp4"
    assert main(["restore", str(clip), "-o", str(out), "--preview", "0.5"]) == 0
    source, preview = probe(clip), probe(out)
    frames = sum(1 for t in source.pts if (t - source.pts[0]) * source.time_base < 0.5)
    assert preview.frame_count == frames
    assert preview.width == source.width * 2 // 2 * 2 and preview.height == source.height // 2 * 2
    # the left half is the input: a restorer that changed nothing there would make both halves equal
    first = next(iter(decode(out))).rgb
    half = first.shape[1] // 2
    assert abs(first[:, :half].astype(int) - first[:, half:].astype(int)).max() > 0
    report = json.loads((tmp_path / "preview.mp4.report.json").read_text())
    assert report["preview"] == 0.5 and report["frames"] == frames
    (track,) = report["tracks"]  # one person in this clip
    assert track["frames_touched"] == frames
    assert track["identity_after"] > 0.9 and track["references"]["frames"]
    assert (tmp_path / "preview.mp4.report.html").read_text().startswith("<!doctype html>")
    assert not (tmp_path / "preview.mp4.work").exists()


def test_bad_preview_length_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "p.mp4"
    assert main(["restore", str(data_dir / "clips" / "keep_real_1.mp4"), "-o", str(out), "--preview", "0"]) == 2
    assert "--preview: run.preview_seconds must be above 0" in capsys.readouterr().err
    assert not out.exists()


def test_missing_weights_fail_before_any_work(data_dir, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    clip = str(data_dir / "clips" / "keep_real_1.mp4")
    args = ["restore", clip, "-o", str(out), "--restorer", "osdface", "--set", f"restore.weights={tmp_path / 'none'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "osdface weights are missing" in err and "associate_2.ckpt" in err and "Traceback" not in err
    assert main(["restore", clip, "-o", str(out), "--restorer", "nosuch"]) == 2
    assert "unknown restorer 'nosuch'" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "o.mp4.work").exists()


def test_a_video_without_faces_is_copied_and_says_so(tmp_path, capsys):
    import numpy as np

    from pipeline.synth import write_clip

    clip = write_clip(tmp_path / "flat.mp4", (np.full((64, 96, 3), 20 * i, np.uint8) for i in range(6)))
    out = tmp_path / "out.mp4"
    assert main(["restore", str(clip), "-o", str(out)]) == 0
    assert "no faces found" in capsys.readouterr().err
    assert probe(out).pts == probe(clip).pts
    assert json.loads((tmp_path / "out.mp4.report.json").read_text())["tracks"] == []
