"""`reelface restore`: plan -> detect -> track -> references -> restore -> assemble, on any executor.

1. Probe the input, then check everything the run needs before any work (pipeline/preflight.py).
2. Plan chunks of at most run.chunk_seconds (plan.py) and open the work dir's manifest (manifest.py): a
   rerun of the same command resumes, skipping every chunk and stage the manifest marks finished.
3. Detect faces per chunk; build tracks on the driver (the whole video at once: cuts, ids); pick
   references per track.
4. Restore per chunk: decode the chunk with its context frames, restore its faces, encode its segment.
5. Assemble the segments with every other stream of the input, then remove the work dir. After a
   failure the work dir stays, so that the rerun resumes.

The executor (`run.executor`) only decides where the stage functions of pipeline/stages.py run: in
this process (`local`) or as Ray tasks and actors (`ray`, workers/). Results come back to this driver,
which alone writes the manifest.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from tracking.faces import TrackSet

from . import mux
from .config import Config
from .errors import ReelfaceError
from .manifest import (JOURNAL_NAME, LOCK_NAME, MANIFEST_NAME, Manifest, durable_replace, input_identity,
                       stage_digests)
from .memory import keep_freed_memory
from .outputs import written
from .picture import describe
from .plan import Chunk, plan_chunks
from .preflight import check_restore
from .references import ReferenceStore
from .restorers.registry import needs_faces, reference_crops
from .stages import LocalExecutor, default_restorer_factory, references_stage, tracks_stage
from .video import VideoInfo, probe, segment_suffix

DETECT_DIR, SEGMENT_DIR, REFERENCES_DIR = "detect", "segments", "references"
TRACKS_FILE, REFERENCES_FILE = "tracks.pkl", "references.pkl"


def work_dir_for(output: Path, cfg: Config) -> Path:
    """run.work_dir, or <output>.work beside the output."""
    return Path(cfg.run.work_dir) if cfg.run.work_dir else output.with_name(output.name + ".work")


def remove_work_files(folder: Path) -> None:
    """Remove what a run wrote into its work dir, and the dir itself if that leaves it empty (a
    --work-dir the user shares with other files keeps those)."""
    for sub in (DETECT_DIR, SEGMENT_DIR, REFERENCES_DIR):
        for file in (folder / sub).glob("*"):
            file.unlink(missing_ok=True)
        if (folder / sub).exists():
            (folder / sub).rmdir()
    for name in (TRACKS_FILE, REFERENCES_FILE, MANIFEST_NAME, JOURNAL_NAME, LOCK_NAME):
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: not only ours


def local_executor(cfg: Config, make_restorer: Callable[[], Any]) -> LocalExecutor:
    """The in-process executor; other executors are picked by the CLI (pipeline.cli.make_executor), the
    only place in pipeline/ that may import workers/ (Ray)."""
    if cfg.run.executor != "local":
        raise ReelfaceError(f"run.executor is '{cfg.run.executor}', but this caller runs stages only in-process; "
                            "pass make_executor=pipeline.cli.make_executor to pick the configured one")
    return LocalExecutor(cfg, make_restorer)


def _save(path: Path, value: Any) -> None:
    """Pickle atomically: an exact copy (a JSON round trip would round the landmarks, and a resumed
    run would then restore differently from an uninterrupted one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    durable_replace(tmp, path)


def _load(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


class Run:
    """One restore job on one executor; each step skips what the manifest marks finished."""

    def __init__(self, source: Path, info: VideoInfo, cfg: Config, manifest: Manifest, executor: Any,
                 progress: tqdm):
        self.source, self.info, self.cfg = source, info, cfg
        self.manifest, self.executor, self.progress = manifest, executor, progress
        self.folder = manifest.work_dir
        self.plan = manifest.plan

    def _pending(self, stage: str) -> list[Chunk]:
        pending = self.manifest.pending(stage, self.plan)
        self.progress.set_description(stage)
        self.progress.update(sum(c.frames for c in self.plan) - sum(c.frames for c in pending))
        return pending

    def detect(self) -> list:
        folder = self.folder / DETECT_DIR
        folder.mkdir(exist_ok=True)
        for chunk, found in self.executor.detect(str(self.source), self._pending("detect")):
            _save(folder / f"{chunk.name}.pkl", found)
            self.manifest.mark("detect", chunk.name, file=f"{DETECT_DIR}/{chunk.name}.pkl")
            self.progress.update(chunk.frames)
        # read back also what was just computed: a fresh run and a resumed one see the same objects
        return [_load(folder / f"{chunk.name}.pkl") for chunk in self.plan]

    def driver_step(self, stage: str, file: str, compute: Callable[[], Any]) -> Any:
        """A whole-video step run on the driver (tracks, references), computed once per work dir."""
        path = self.folder / file
        if not self.manifest.is_done(stage, "all"):
            self.progress.set_description(stage)
            _save(path, compute())
            self.manifest.mark(stage, "all", file=file)
        return _load(path)

    def render(self, trackset: Any, refs: Any) -> list[Path]:
        folder = self.folder / SEGMENT_DIR
        folder.mkdir(exist_ok=True)
        suffix = segment_suffix(self.cfg.encode.codec)

        def segment_for(chunk: Chunk) -> Path:
            return folder / f"{chunk.name}{suffix}"

        for chunk, stats in self.executor.render(str(self.source), self._pending("restore"), self.info, trackset,
                                                 refs, segment_for):
            self.manifest.mark("restore", chunk.name, file=f"{SEGMENT_DIR}/{segment_for(chunk).name}", **stats)
            self.progress.update(chunk.frames)
        return [segment_for(chunk) for chunk in self.plan]


def preview_frame_count(info: VideoInfo, seconds: float) -> int:
    """Frames whose time is within the first `seconds` of the video (at least one)."""
    limit = info.pts[0] + seconds / info.time_base
    return max(1, sum(1 for pts in info.pts if pts < limit))


def collect_stats(manifest: Manifest) -> dict[int, Any]:
    """Every chunk's report numbers, merged per track (from the manifest, so a resumed run reports all)."""
    from .report import TrackStats

    merged: dict[int, TrackStats] = {}
    for entry in manifest.entries("restore"):
        for track_id, data in (entry.get("tracks") or {}).items():
            entry = merged.setdefault(int(track_id), TrackStats(int(track_id)))
            for key, values in data.items():
                if key != "track_id":
                    getattr(entry, key).extend(values)
    return merged


def write_side_by_side(source: Path, segments: list[Path], target: Path, info: VideoInfo, frame_count: int) -> None:
    """The preview: input | restored, streamed frame by frame, with the input's timestamps."""
    from .evaluate import side_by_side
    from .synth import ClipSpec
    from .video import decode

    before = (frame.rgb for frame in decode(source, 0, frame_count, info=info))
    after = (frame.rgb for segment in segments for frame in decode(segment))
    with written(target) as tmp:
        side_by_side(before, after, tmp, ClipSpec(time_base=info.time_base, pts=list(info.pts[:frame_count])))


def restore(input: str | Path, output: str | Path, cfg: Config, overwrite: bool = False, *,
            make_restorer: Callable[[], Any] | None = None,
            make_executor: Callable[[Config, Callable[[], Any]], Any] = local_executor) -> Path:
    """Restore the faces in `input` into `output`; everything else copied or re-encoded exactly.

    With run.preview_seconds, only the first seconds are restored and `output` shows input | restored.
    `make_restorer` builds the restorer where it runs (default: the one named in cfg.restore);
    `make_executor(cfg, make_restorer)` decides where the stages run (default: in this process).
    """
    source, target = Path(input), Path(output)
    keep_freed_memory()  # the face path's large arrays reuse freed memory (pipeline/memory.py)
    info = probe(source)  # input errors (missing, not a video, corrupt) before any output check
    with_faces = make_restorer is not None or needs_faces(cfg.restore)  # a custom restorer may change pixels
    assembling = False
    check_restore(source, target, info, cfg, overwrite, with_faces=with_faces,
                  custom_restorer=make_restorer is not None)
    preview = cfg.run.preview_seconds
    if preview is None and not mux.exact_timestamps(target, info):
        print(f"reelface: warning: {target.suffix} stores 1 ms timestamps, so the input's {info.time_base} "
              "frame times will be rounded; write .mov, .mp4 or .nut to keep them exact", file=sys.stderr)
    frame_count = info.frame_count if preview is None else preview_frame_count(info, preview)
    plan = plan_chunks(frame_count, [k for k in info.keyframes if k < frame_count], info.pts[:frame_count],
                       info.time_base, cfg.run.chunk_seconds, cfg.run.context_frames)
    executor = make_executor(cfg, make_restorer or default_restorer_factory(cfg))
    folder = work_dir_for(target, cfg)
    manifest, notes = Manifest.open(folder, identity=input_identity(source), plan=plan, digests=stage_digests(cfg))
    for note in notes:
        print(f"reelface: {note}", file=sys.stderr)
    try:
        with executor, tqdm(total=(2 if with_faces else 1) * frame_count, unit="frame", desc="detect",
                            dynamic_ncols=True, mininterval=0.5, disable=None) as progress:
            run = Run(source, info, cfg, manifest, executor, progress)
            if with_faces:
                detections = run.detect()
                trackset = run.driver_step("tracks", TRACKS_FILE, lambda: tracks_stage(detections, frame_count, cfg))
                # a custom restorer may use any of them; a named one says how many it uses
                keep = None if make_restorer is not None else reference_crops(cfg.restore)
                refs = ReferenceStore(manifest.work_dir / REFERENCES_DIR)
                chosen = run.driver_step("references", REFERENCES_FILE,
                                         lambda: references_stage(str(source), trackset, cfg, refs, keep))
                if not trackset.tracks:
                    print(f"reelface: no faces found in {source}: its frames are re-encoded unchanged",
                          file=sys.stderr)
            else:
                trackset, refs, chosen = TrackSet(tracks=[], cuts=[], frame_count=frame_count), {}, {}
            segments = run.render(trackset, refs)
        if preview is None:
            assembling = True
            mux.assemble(segments, source, target, info)
        else:
            write_side_by_side(source, segments, target, info, frame_count)
        if cfg.run.report and with_faces:
            from .report import write_report

            write_report(target, {"input": str(source), "output": str(target), "restorer": cfg.restore.restorer,
                                  "strength": cfg.blend.strength, "frames": frame_count, "preview": preview,
                                  "shots": len(trackset.cuts) + 1, "persons": len(trackset.person_ids),
                                  "picture": describe(info),
                                  "config_digest": cfg.digest(), "config": cfg.to_dict()},
                         collect_stats(manifest), chosen, refs)
    except BaseException as exc:
        if not manifest.finished_anything():
            remove_work_files(folder)  # nothing to resume from
        elif isinstance(exc, ReelfaceError) and assembling:
            # the same command would fail the same way; the work dir does not depend on the output's name
            other = target.with_suffix(".mov" if target.suffix == ".mkv" else ".mkv").name
            raise ReelfaceError(f"{exc}. The restored video is kept in {folder}: rerun with another -o (e.g. {other}) "
                                f"and --work-dir {folder} to assemble it without redoing the work") from exc
        elif isinstance(exc, ReelfaceError):
            raise ReelfaceError(f"{exc}. What finished is kept in {folder}: rerun the same command to resume") from exc
        raise
    else:
        if not cfg.run.keep_work_dir:
            remove_work_files(folder)
    finally:
        manifest.close()
    return target
