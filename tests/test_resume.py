"""Resume on a generated two-face clip: SIGKILL a running restore after some chunks, rerun it, and get
the uninterrupted run's file without redoing the finished chunks; a changed config is said and redone;
and the Ray executor gives the same frames as that uninterrupted local run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import make_executor
from pipeline.config import load_config
from pipeline.manifest import finished
from pipeline.run import restore
from pipeline.video import decode
from ray_clips import two_faces

SETTINGS = ["run.chunk_seconds=0.2", "run.context_frames=4", "encode.codec=ffv1", "detect.stride=3",
            "run.max_inflight=2", "run.restore_actors=2", "run.batch_wait_ms=5"]

DRIVER = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    from pipeline.config import load_config
    from pipeline.manifest import finished
    from pipeline.run import restore

    clip, out, work = sys.argv[1:4]

    class Darken:
        """The uninterrupted run's restorer, but it stops making progress once two chunks are
        restored: the test kills this process there, with two chunks finished and one in flight."""
        name, temporal_radius = "darken", 0

        def restore(self, crops, refs=None):
            if len(finished(work, "restore")) >= 2:
                time.sleep(600)
            return crops.flip(-1) * 0.75

    restore(clip, out, load_config("default", [*json.loads(sys.argv[4]), f"run.work_dir={work}"]),
            make_restorer=Darken)
''')


class Darken:
    """Per-crop, deterministic, visible; single elementwise ops (no dependence on batch or threads)."""

    name, temporal_radius = "darken", 0

    def restore(self, crops, refs=None):
        return crops.flip(-1) * 0.75


def settings(executor, *extra):
    return load_config("default", [f"run.executor={executor}", *SETTINGS, *extra])


def same_frames(a, b):
    return all(x.pts == y.pts and np.array_equal(x.rgb, y.rgb) for x, y in zip(decode(a), decode(b), strict=True))


def restored_chunks(work: Path) -> dict:
    return finished(work, "restore")


@pytest.fixture(scope="module")
def clip(data_dir, tmp_path_factory):
    return two_faces(data_dir / "faces", tmp_path_factory.mktemp("clip") / "two.mp4")


@pytest.fixture(scope="module")
def uninterrupted(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out.mkv"
    restore(clip, out, settings("local"), make_restorer=Darken)
    assert not out.with_name("out.mkv.work").exists()  # removed after success
    assert not same_frames(clip, out)  # faces were restored
    return out


def test_killed_run_resumes_without_redoing_finished_chunks(clip, uninterrupted, tmp_path, capsys):
    out, work = tmp_path / "out.mkv", tmp_path / "work"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    keep = ["run.executor=local", *SETTINGS, "run.keep_work_dir=true"]
    driver = subprocess.Popen([sys.executable, str(script), str(clip), str(out), str(work), json.dumps(keep)],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180  # a busy shared machine: the two chunks take long there
        while len(restored_chunks(work)) < 2:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the run never finished two chunks"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL and not out.exists()
    before = restored_chunks(work)
    assert len(before) == 2  # the third was in flight

    restore(clip, out, settings("local", "run.keep_work_dir=true", f"run.work_dir={work}"), make_restorer=Darken)
    manifest = json.loads((work / "manifest.json").read_text())
    after = finished(work, "restore")
    assert len(after) == len(manifest["plan"]) == 4
    for name, entry in before.items():  # finished before the kill: kept as they were, not recomputed
        assert after[name] == entry
    assert {after[name]["run"] for name in after.keys() - before.keys()} == {2}
    assert {entry["run"] for entry in finished(work, "detect").values()} == {1}
    assert same_frames(out, uninterrupted)

    # the same work dir with another blend strength: said, restore redone, detections kept
    restore(clip, out, settings("local", "run.keep_work_dir=true", f"run.work_dir={work}", "blend.strength=0.5"),
            overwrite=True, make_restorer=Darken)
    assert "config of the restore stage changed" in capsys.readouterr().err
    assert {e["run"] for e in finished(work, "detect").values()} == {1}
    assert {e["run"] for e in finished(work, "restore").values()} == {3}


def test_ray_gives_the_local_frames_on_the_generated_clip(ray_local, clip, uninterrupted, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Darken travels to the actors by value
    out = tmp_path / "ray.mkv"
    restore(clip, out, settings("ray"), make_restorer=Darken, make_executor=make_executor)
    assert same_frames(out, uninterrupted)
