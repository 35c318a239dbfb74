"""`reelface restore`: check the paths, decode -> (faces) -> encode a segment, assemble the final file.

First version: one segment for the whole video, frames untouched (the identity path). The chunk plan
(workers/chunks.py) and the face stages slot in where marked; the path checks, the work-dir handling
and the cleanup stay as they are.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from . import mux
from .config import Config
from .errors import ReelfaceError
from .video import VideoInfo, VideoWriter, decode, probe, segment_suffix


def check_output_path(source: Path, output: Path, overwrite: bool) -> None:
    """Refuse outputs that would overwrite the input, land nowhere, or clobber a file unasked."""
    if not output.suffix:
        raise ReelfaceError(f"output {output} has no file extension; name the container, e.g. {output}.mp4")
    if output.resolve() == source.resolve() or (output.exists() and os.path.samefile(output, source)):
        raise ReelfaceError(f"output {output} is the input file; reelface never writes over its input, "
                            "choose another output name")
    if output.is_dir():
        raise ReelfaceError(f"output {output} is a directory; give a file name such as {output / 'restored.mp4'}")
    if output.exists() and not overwrite:
        raise ReelfaceError(f"output {output} already exists; pass --overwrite to replace it")
    parent = output.parent
    if not parent.is_dir():
        raise ReelfaceError(f"output directory {parent} does not exist; create it first")
    try:  # os.access() says yes to root even on read-only mounts: really try
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ReelfaceError(f"cannot write to the output directory {parent} ({exc.strerror}); "
                            "choose a writable location") from None


@contextmanager
def work_dir(output: Path, cfg: Config):
    """The folder for segment files: run.work_dir or <output>.work; removed afterwards if we made it."""
    path = Path(cfg.run.work_dir) if cfg.run.work_dir else output.with_name(output.name + ".work")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReelfaceError(f"cannot create the work directory {path} ({exc.strerror}); "
                            "set --work-dir to a writable folder") from None
    made: list[Path] = []
    try:
        yield path, made
    finally:
        # Nothing to resume from yet (no manifest), so a failed run leaves nothing either.
        if not cfg.run.keep_work_dir:
            for file in made:
                file.unlink(missing_ok=True)
            if created:
                shutil.rmtree(path, ignore_errors=True)


def encode_segment(source: Path, info: VideoInfo, segment: Path, cfg: Config, progress: tqdm) -> None:
    """Decode every frame, let the face stages paste into it, encode it with its own pts."""
    with VideoWriter(segment, info, cfg.encode) as writer:
        for frame in decode(source, info=info):
            # Face processing goes here: process.restore_frames() mutates frames through Frame.paste()
            # before they are written. Until it lands, every restorer leaves the frames untouched.
            writer.write(frame)
            progress.update()


def restore(input: str | Path, output: str | Path, cfg: Config, overwrite: bool = False) -> Path:
    """Restore the faces in `input` into `output`; everything else copied or re-encoded exactly."""
    source, target = Path(input), Path(output)
    info = probe(source)  # input errors (missing, not a video, corrupt) before any output check
    check_output_path(source, target, overwrite)
    mux.check_output_container(source, target, info, cfg.encode.codec)
    if not mux.exact_timestamps(target, info):
        print(f"reelface: warning: {target.suffix} stores 1 ms timestamps, so the input's {info.time_base} "
              "frame times will be rounded; write .mov, .mp4 or .nut to keep them exact", file=sys.stderr)
    with work_dir(target, cfg) as (folder, made), \
            tqdm(total=info.frame_count, unit="frame", desc="restore", dynamic_ncols=True,
                 mininterval=0.5, disable=None) as progress:
        segment = folder / f"video{segment_suffix(cfg.encode.codec)}"
        made.append(segment)
        encode_segment(source, info, segment, cfg, progress)
        mux.assemble([segment], source, target, info)
    return target
