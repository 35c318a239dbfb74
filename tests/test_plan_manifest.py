"""Chunk plan bounded by chunk_seconds, the manifest journal and the work dir lock (pure Python: no Ray,
no video), and the layering: pipeline/ and tracking/ never import workers/ (Ray)."""

import json
import os
import sys
from fractions import Fraction

import pytest

from pipeline.config import load_config
from pipeline.errors import ReelfaceError
from pipeline.manifest import JOURNAL_NAME, Manifest, finished, input_identity, stage_digests
from pipeline.plan import Chunk, chunk_failed, plan_chunks

TB = Fraction(1, 11988)
HAMILTON_KEYS = [0, 60, 120, 163, 211, 271]  # hamilton.mp4's keyframes (29.97 fps, 275 frames)


def cfr_pts(n, step=400):
    return [75414 + i * step for i in range(n)]


def frame_seconds(chunk, pts=None, tb=TB):
    pts = pts or cfr_pts(275)
    return float((pts[chunk.stop - 1] - pts[chunk.start]) * tb)


def test_plan_covers_every_frame_once_in_chunks_of_at_most_chunk_seconds():
    for seconds in (0.5, 1.0, 1.9, 3.0, 10.0):
        chunks = plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, seconds, context_frames=4)
        assert chunks[0].start == 0 and chunks[-1].stop == 275
        assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
        assert [c.index for c in chunks] == list(range(len(chunks)))
        assert all(frame_seconds(c) < seconds for c in chunks[:-1])
        assert frame_seconds(chunks[-1]) < 1.5 * seconds  # the last one may have taken a short tail
    assert [(c.start, c.stop) for c in plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 2.0)] == [
        (0, 60), (60, 120), (120, 163), (163, 211), (211, 275)]  # the 4-frame tail joins the last chunk
    assert len(plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 10.0)) == 1


def test_plan_cuts_on_a_keyframe_when_one_is_near_else_between_keyframes():
    fps30 = [i * 1000 for i in range(300)]  # time base 1/30000 -> 30 fps
    tb = Fraction(1, 30000)
    # target 2 s = frame 60: keyframes at 55 and 90 -> 55 (90 would make the chunk too long)
    assert plan_chunks(300, [0, 55, 90, 200], fps30, tb, 2.0)[0].stop == 55
    # keyframes at 10 (a chunk shorter than half) and 150 (too long): cut at 2 s, inside the GOP
    assert [c.start for c in plan_chunks(300, [0, 10, 150], fps30, tb, 2.0)] == [0, 60, 120, 150, 210]
    # one keyframe for the whole video (screen or security recordings): chunks of 2 s all the same
    assert [(c.start, c.stop) for c in plan_chunks(300, [0], fps30, tb, 2.0)] == [
        (0, 60), (60, 120), (120, 180), (180, 240), (240, 300)]


def test_plan_cuts_vfr_by_time_not_frame_count():
    # 60 frames at 1/30 s then 60 at 1/10 s: 2 s chunks hold 60 frames in the fast part and 20 in the
    # slow part, with keyframes every 10 frames and without any keyframe after the first
    pts = [i * 1000 for i in range(60)] + [60000 + i * 3000 for i in range(60)]
    for keys in (list(range(0, 120, 10)), [0]):
        chunks = plan_chunks(120, keys, pts, Fraction(1, 30000), 2.0)
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
    manifest.mark("restore", plan[0].name, file="seg0.nut", seconds=1.5)
    manifest.mark("detect", plan[1].name)
    manifest.close()

    again, notes = open_manifest(work, clip)
    assert again.run == 2 and any("resuming" in n for n in notes)
    assert [c.name for c in again.pending("restore", plan)] == [c.name for c in plan[1:]]
    entry = finished(work, "restore")[plan[0].name]
    assert entry["run"] == 1 and entry["seconds"] == 1.5  # not recomputed: still the first run's
    assert again.is_done("detect", plan[1].name)

    (work / "seg0.nut").unlink()  # a result file that disappeared is redone
    assert not again.is_done("restore", plan[0].name)
    again.close()


def test_manifest_finds_results_from_another_current_directory(tmp_path, clip, monkeypatch):
    """A relative work dir (a relative -o) resumes from wherever the rerun is started."""
    monkeypatch.chdir(tmp_path)
    manifest, _ = open_manifest("out.mkv.work", clip)
    (tmp_path / "out.mkv.work" / "seg0.nut").write_bytes(b"x")
    manifest.mark("restore", "chunk-0000", file="seg0.nut")
    manifest.close()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again, _ = open_manifest(tmp_path / "out.mkv.work", clip)
    assert again.is_done("restore", "chunk-0000")
    again.close()
    with pytest.raises(ValueError, match="relative to the work dir"):
        manifest.mark("restore", "chunk-0001", file=tmp_path / "seg1.nut")


def test_a_second_run_on_the_same_work_dir_is_refused(tmp_path, clip):
    work = tmp_path / "work"
    first, _ = open_manifest(work, clip)
    first.mark("detect", "chunk-0000")
    with pytest.raises(ReelfaceError, match=f"work dir {work} is in use by another reelface run .pid {os.getpid()}"):
        open_manifest(work, clip)
    assert first.is_done("detect", "chunk-0000") and finished(work, "detect").keys() == {"chunk-0000"}
    first.close()
    again, _ = open_manifest(work, clip)  # given back: the next run gets it
    assert again.run == 2
    again.close()


def test_a_killed_run_never_blocks_its_resume(tmp_path, clip):
    import subprocess

    work = tmp_path / "work"
    code = ("import sys, os; sys.path[:0] = sys.argv[3:]; from pipeline.manifest import lock_work_dir; "
            "from pathlib import Path; lock_work_dir(Path(sys.argv[1])); print('locked', flush=True); "
            "os.kill(os.getpid(), 9)")
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", code, str(work), "x", *sys.path], capture_output=True, text=True)
    assert out.returncode == -9 and out.stdout.strip() == "locked"
    manifest, _ = open_manifest(work, clip)
    manifest.close()


def test_manifest_changed_config_redoes_affected_stages_only(tmp_path, clip):
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    name = manifest.plan[0].name
    for stage in ("detect", "tracks", "references", "restore"):
        manifest.mark(stage, name)
    manifest.close()
    # blend changes only the restore stage; detections, tracks and references are kept
    again, notes = open_manifest(work, clip, load_config("default", ["blend.strength=0.5"]))
    assert again.is_done("detect", name) and again.is_done("references", name)
    assert not again.is_done("restore", name)
    assert any("restore stage changed" in n for n in notes)
    again.close()
    # a tracking change redoes tracks and everything after them
    again, notes = open_manifest(work, clip, load_config("default", ["track.max_gap=5"]))
    assert again.is_done("detect", name) and not again.is_done("tracks", name)
    again.close()
    # the run section (executor, address...) changes nothing that was computed
    again, notes = open_manifest(work, clip, load_config("default", ["run.executor=ray", "track.max_gap=5"]))
    assert again.is_done("detect", name) and not any("stage changed" in n for n in notes)
    again.close()


def test_manifest_changed_input_or_plan_starts_over(tmp_path, clip):
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    manifest.mark("detect", manifest.plan[0].name)
    manifest.close()
    clip.write_bytes(b"another file now")
    again, notes = open_manifest(work, clip)
    assert not again.is_done("detect", manifest.plan[0].name) and finished(work, "detect") == {}
    assert any("input changed" in n and "starting over" in n for n in notes)
    assert not any("stage changed" in n for n in notes)

    again.mark("detect", again.plan[0].name)
    again.close()
    other_plan = plan_chunks(275, HAMILTON_KEYS, cfr_pts(275), TB, 4.0)
    again, notes = open_manifest(work, clip, plan=other_plan)
    assert not again.is_done("detect", other_plan[0].name)
    assert any("chunk plan changed" in n for n in notes)
    again.close()


def test_manifest_unreadable_starts_over(tmp_path, clip):
    work = tmp_path / "work"
    work.mkdir()
    (work / "manifest.json").write_text("{torn")
    manifest, notes = open_manifest(work, clip)
    assert manifest.run == 1 and any("unreadable" in n for n in notes)
    manifest.close()


def test_a_torn_last_journal_line_is_dropped(tmp_path, clip):
    """A run killed in the middle of an append: the complete entries are kept, the torn one redone."""
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    manifest.mark("detect", "chunk-0000")
    manifest.close()
    with open(work / JOURNAL_NAME, "a") as f:
        f.write('{"name": "chunk-0001", "stage": "det')
    again, _ = open_manifest(work, clip)
    assert again.is_done("detect", "chunk-0000") and not again.is_done("detect", "chunk-0001")
    again.mark("detect", "chunk-0002")  # appended after the compacted journal, not after the torn line
    assert finished(work, "detect").keys() == {"chunk-0000", "chunk-0002"}
    again.close()


def test_recording_a_chunk_appends_one_line(tmp_path, clip):
    """The cost of recording a chunk does not grow with what is already recorded."""
    work = tmp_path / "work"
    manifest, _ = open_manifest(work, clip)
    before = (work / JOURNAL_NAME).read_bytes()
    for k in range(50):
        manifest.mark("restore", f"chunk-{k:04d}", tracks={"1": {"frames": list(range(k * 10, k * 10 + 10))}})
        after = (work / JOURNAL_NAME).read_bytes()
        assert after.startswith(before)  # what was written stays as it was: appended, never rewritten
        line = after[len(before):]
        assert line.count(b"\n") == 1 and json.loads(line)["name"] == f"chunk-{k:04d}"
        before = after
    assert (work / "manifest.json").stat().st_mtime_ns < (work / JOURNAL_NAME).stat().st_mtime_ns
    manifest.close()


def test_chunk_failure_names_the_chunk():
    chunk = Chunk(3, 120, 163, 112, 171)
    err = chunk_failed(chunk, "restore", RuntimeError("CUDA error: out of memory\nmore"))
    assert str(err) == "chunk-0003 (frames 120..162) failed in the restore stage: RuntimeError: CUDA error: out of memory"


def test_the_domain_runs_without_ray():
    import subprocess

    code = "import pipeline.plan, pipeline.manifest, pipeline.stages, pipeline.run, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"


def imports_of(path):
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_only_the_cli_imports_workers():
    from conftest import REPO

    offenders = [str(path.relative_to(REPO)) for folder in ("pipeline", "tracking") for path in (REPO / folder).rglob("*.py")
                 if any(name.split(".")[0] == "workers" for name in imports_of(path))]
    assert offenders == ["pipeline/cli.py"]
