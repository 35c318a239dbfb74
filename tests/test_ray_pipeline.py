"""The Ray executor against the local one on hamilton.mp4: same frames, faults survived or named, and
a failed run resumed. (The generated clip's comparison is in test_resume.py, beside its local run.)"""

import json
import shutil
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray import cloudpickle  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.cli import make_executor  # noqa: E402
from pipeline.errors import ReelfaceError  # noqa: E402
from pipeline.manifest import JOURNAL_NAME, finished  # noqa: E402
from pipeline.run import restore  # noqa: E402
from pipeline.video import decode, probe  # noqa: E402
from ray_clips import hamilton_head  # noqa: E402

# the test restorers travel to Ray's actors by value (workers cannot import a test module)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FRAMES, GOP = 27, 9  # hamilton: 3 chunks of 9 frames at chunk_seconds 0.3


class Darken:
    """Per-crop, deterministic, and visible in the output: a crop pasted back into the wrong face
    or the wrong frame shows up as a pixel difference. Single elementwise ops only, so the result
    does not depend on batch composition or thread count."""

    name = "darken"
    temporal_radius = 0

    def __init__(self, crash_marker=None, fail=False):
        self.crash_marker, self.fail = crash_marker, fail

    def restore(self, crops, refs=None):
        if self.fail:
            raise RuntimeError("restorer broke")
        if self.crash_marker is not None and not self.crash_marker.exists():
            self.crash_marker.touch()  # crash once; the restarted actor finds the marker
            import os

            os._exit(1)
        return crops.flip(-1) * 0.75


def config(executor, *extra):
    return load_config("default", [
        f"run.executor={executor}", "run.chunk_seconds=0.3", "run.context_frames=4",
        "run.max_inflight=2", "run.restore_actors=2", "run.batch_wait_ms=5", "encode.codec=ffv1",
        "detect.stride=3", *extra])


def frames_of(path):
    return [f.rgb for f in decode(path)]


def millis(info):
    return [round(p * info.time_base * 1000) for p in info.pts]


def assert_same_frames(a, b):
    for x, y in zip(frames_of(a), frames_of(b), strict=True):
        assert np.array_equal(x, y)


def without_restore_stage(work, copy):
    """A copy of a finished run's work dir with detections, tracks and references only: the start of
    a run whose restore stage has not begun (tests of that stage skip re-detecting)."""
    shutil.copytree(work, copy)
    shutil.rmtree(copy / "segments")
    journal = (copy / JOURNAL_NAME).read_text().splitlines(keepends=True)
    (copy / JOURNAL_NAME).write_text("".join(line for line in journal if json.loads(line)["stage"] != "restore"))
    return copy


@pytest.fixture(scope="module")
def hamilton(data_dir, tmp_path_factory):
    return hamilton_head(data_dir / "clips" / "hamilton.mp4", tmp_path_factory.mktemp("clip") / "head.mp4",
                         FRAMES, GOP)


@pytest.fixture(scope="module")
def local_run(hamilton, tmp_path_factory):
    """The local executor's output and its kept work dir."""
    folder = tmp_path_factory.mktemp("local")
    out, work = folder / "local.mkv", folder / "work"
    restore(hamilton, out, config("local", "run.keep_work_dir=true", f"run.work_dir={work}"), make_executor=make_executor, make_restorer=Darken)
    return out, work


def test_local_run_restores_faces_and_keeps_timing(hamilton, local_run):
    out, work = local_run
    src, dst = probe(hamilton), probe(out)
    assert dst.frame_count == FRAMES and millis(dst) == millis(src)  # Matroska keeps 1 ms timestamps
    assert [s["type"] for s in dst.streams] == ["video", "audio"]
    changed = [not np.array_equal(a, b) for a, b in zip(frames_of(hamilton), frames_of(out))]
    assert sum(changed) > FRAMES // 2  # faces were found and darkened in most frames
    manifest = json.loads((work / "manifest.json").read_text())
    assert len(manifest["plan"]) == 3 and len(finished(work, "restore")) == 3


def test_ray_gives_the_local_frames_on_hamilton(ray_local, hamilton, local_run, tmp_path):
    out = tmp_path / "ray.mkv"
    restore(hamilton, out, config("ray"), make_executor=make_executor, make_restorer=Darken)
    assert probe(out).pts == probe(local_run[0]).pts
    assert_same_frames(out, local_run[0])
    assert not (tmp_path / "ray.mkv.work").exists()  # removed after success


def test_restore_actor_that_crashes_once_is_restarted_same_frames(ray_local, hamilton, local_run, tmp_path):
    marker = tmp_path / "crashed"
    work = without_restore_stage(local_run[1], tmp_path / "work")
    out = tmp_path / "crash.mkv"
    restore(hamilton, out, config("ray", "run.retries=2", f"run.work_dir={work}", "run.restore_actors=1"),
            make_executor=make_executor, make_restorer=lambda: Darken(crash_marker=marker))
    assert marker.exists()  # it did crash
    assert_same_frames(out, local_run[0])


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_chunk_that_fails_for_good_is_named_and_the_work_dir_kept(request, executor, hamilton, local_run, tmp_path):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    work = without_restore_stage(local_run[1], tmp_path / "work")
    out = tmp_path / "fail.mkv"
    began = time.monotonic()
    with pytest.raises(ReelfaceError, match=r"chunk-\d{4} \(frames \d+\.\.\d+\) failed in the restore stage: "
                                            r"RuntimeError: restorer broke.*rerun the same command"):
        restore(hamilton, out, config(executor, f"run.work_dir={work}", "run.restore_actors=1"),
                make_executor=make_executor, make_restorer=lambda: Darken(fail=True))
    assert time.monotonic() - began < 60  # an error, not a hang
    assert not out.exists() and (work / "manifest.json").exists()  # the work dir stays for the resume
    if executor == "local":  # resuming is the driver's work, the same for both executors
        restore(hamilton, out, config(executor, f"run.work_dir={work}", "run.keep_work_dir=true"),
                make_executor=make_executor, make_restorer=Darken)
        assert {e["run"] for e in finished(work, "detect").values()} == {1}  # not redone
        assert {e["run"] for e in finished(work, "restore").values()} == {3}
        assert_same_frames(out, local_run[0])
