"""Chunk plan on keyframes and the manifest (pure Python: no Ray, no video)."""

import json
import os
import sys
from fractions import Fraction

import pytest

from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from workers.chunks import Chunk, Manifest, chunk_failed, input_identity, plan_chunks, stage_digests

TB = Fraction(1, 11988)
HAMILTON_KEYS = [0, 60, 120, 163, 211, 271]  # hamilton.mp4's keyframes (29.97 fps, 275 frames)


def cfr_pts(n, step=400):
    return [75414 + i * step for i in range(n)]


def test_plan_starts_on_keyframes_and_covers_every_frame_once():
    for seconds in (0.5, 1.0, 1.9, 3.0, 10.0):
        chunks = plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, seconds, context_frames=4)
        assert chunks[0].start == 0 and chunks[-1].stop == 275
        assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
        assert all(c.start in HAMILTON_KEYS for c in chunks)
        assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [(c.start, c.stop) for c in plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 2.0)] == [
        (0, 60), (60, 120), (120, 163), (163, 211), (211, 275)]  # the 4-frame tail joins the last chunk
    assert len(plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 10.0)) == 1


def test_plan_picks_the_keyframe_nearest_the_target_but_never_a_short_chunk():
    fps30 = [i * 1000 for i in range(300)]  # time base 1/30000 -> 30 fps
    tb = Fraction(1, 30000)
    # target 2 s = frame 60: keyframes at 55 and 90 -> 55 is nearer
    assert plan_chunks(300, [0, 55, 90, 200], fps30, tb, 2.0)[0].stop == 55
    # keyframes at 10 (too short: < half the target) and 150 -> 150, although 10 is nearer to 60
    assert plan_chunks(300, [0, 10, 150], fps30, tb, 2.0)[0].stop == 150
    # no keyframe but the first: one chunk, never a cut inside a GOP
    assert [(c.start, c.stop) for c in plan_chunks(300, [0], fps30, tb, 2.0)] == [(0, 300)]


def test_plan_cuts_vfr_by_time_not_frame_count():
    # 60 frames at 1/30 s then 60 at 1/10 s: with a keyframe every 10 frames, 2 s chunks hold 60
    # frames in the fast part and 20 in the slow part
    pts = [i * 1000 for i in range(60)] + [60000 + i * 3000 for i in range(60)]
    chunks = plan_chunks(120, list(range(0, 120, 10)), pts, Fraction(1, 30000), 2.0)
    assert [c.frames for c in chunks][:2] == [60, 20]


def test_context_frames_are_clipped_to_the_video():
    chunks = plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 2.0, context_frames=8)
    assert (chunks[0].context_start, chunks[0].context_stop) == (0, 68)
    assert (chunks[1].context_start, chunks[1].context_stop) == (52, 128)
    assert chunks[-1].context_stop == 275


@pytest.mark.parametrize("kwargs, match", [
    ({"frame_count": 0}, "no frames"),
    ({"chunk_seconds": 0}, "chunk_seconds"),
    ({"context_frames": -1}, "context_frames"),
    ({"pts": [0, 1]}, "damaged"),
])
def test_plan_refuses_bad_input(kwargs, match):
    args = {"frame_count": 10, "keyframes": [0], "pts": list(range(10)), "time_base": TB,
            "chunk_seconds": 1.0, "context_frames": 0, **kwargs}
    with pytest.raises(ReelfaceError, match=match):
        plan_chunks(**args)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "in.mp4"
    path.write_bytes(b"not really a video, but a file with a size and an mtime")
    return path


def open_manifest(work, clip, cfg=None, plan=None):
    cfg = cfg or load_config("default")
    plan = plan or plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 2.0)
    return Manifest.open(work, identity=input_identity(clip), plan=plan, digests=stage_digests(cfg))


def test_manifest_resumes_finished_chunks(tmp_path, clip):
    work = tmp_path / "work"
    manifest, notes = open_manifest(work, clip)
    assert notes == [] and manifest.run == 1
    plan = manifest.plan
    (work / "seg0.nut").write_bytes(b"x")
    manifest.mark("restore", plan[0].name, file=work / "seg0.nut", seconds=1.5)
    manifest.mark("detect", plan[1].name)

    again, notes = open_manifest(work, clip)
    assert again.run == 2 and any("resuming" in n for n in notes)
    assert [c.name for c in again.pending("restore", plan)] == [c.name for c in plan[1:]]
    assert again.record("restore", plan[0].name)["run"] == 1  # not recomputed: still the first run's
    assert again.is_done("detect", plan[1].name)

    (work / "seg0.nut").unlink()  # a result file that disappeared is redone
    assert not again.is_done("restore", plan[0].name)


def test_manifest_changed_config_redoes_affected_stages_only(tmp_path, clip):
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    name = manifest.plan[0].name
    for stage in ("detect", "tracks", "references", "restore"):
        manifest.mark(stage, name)
    # blend changes only the restore stage; detections, tracks and references are kept
    again, notes = open_manifest(work, clip, load_config("default", ["blend.strength=0.5"]))
    assert again.is_done("detect", name) and again.is_done("references", name)
    assert not again.is_done("restore", name)
    assert any("restore stage changed" in n for n in notes)
    # a tracking change redoes tracks and everything after them
    again, notes = open_manifest(work, clip, load_config("default", ["track.max_gap=5"]))
    assert again.is_done("detect", name) and not again.is_done("tracks", name)
    # the run section (executor, address...) changes nothing that was computed
    again, notes = open_manifest(work, clip, load_config("default", ["run.executor=ray", "track.max_gap=5"]))
    assert again.is_done("detect", name) and not any("stage changed" in n for n in notes)


def test_manifest_changed_input_or_plan_starts_over(tmp_path, clip):
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    manifest.mark("detect", manifest.plan[0].name)
    clip.write_bytes(b"another file now")
    again, notes = open_manifest(work, clip)
    assert not again.is_done("detect", manifest.plan[0].name)
    assert any("input changed" in n and "starting over" in n for n in notes)

    again.mark("detect", again.plan[0].name)
    other_plan = plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 4.0)
    again, notes = open_manifest(work, clip, plan=other_plan)
    assert not again.is_done("detect", other_plan[0].name)
    assert any("chunk plan changed" in n for n in notes)


def test_manifest_unreadable_starts_over(tmp_path, clip):
    work = tmp_path / "work"
    work.mkdir()
    (work / "manifest.json").write_text("{torn")
    manifest, notes = open_manifest(work, clip)
    assert manifest.run == 1 and any("unreadable" in n for n in notes)


def test_manifest_writes_are_atomic(tmp_path, clip, monkeypatch):
    """A write that dies half way (here: json.dump raising) leaves the previous manifest intact."""
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    manifest.mark("detect", "chunk-0000")
    before = (work / "manifest.json").read_text()

    def torn_dump(data, f, **kw):
        f.write('{"version": 1, "sta')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", torn_dump)
    with pytest.raises(OSError):
        manifest.mark("detect", "chunk-0001")
    monkeypatch.undo()
    assert (work / "manifest.json").read_text() == before
    assert json.loads(before)["stages"]["detect"].keys() == {"chunk-0000"}


def test_chunk_failure_names_the_chunk():
    chunk = Chunk(3, 120, 163, 112, 171)
    err = chunk_failed(chunk, "restore", RuntimeError("CUDA error: out of memory\nmore"))
    assert str(err) == "chunk-0003 (frames 120..162) failed in the restore stage: RuntimeError: CUDA error: out of memory"


def test_chunks_module_does_not_import_ray():
    import subprocess

    code = "import workers.chunks, pipeline.stages, pipeline.run, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"
