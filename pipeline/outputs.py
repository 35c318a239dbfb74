"""The one output guard: every command checks every file it will write before any work, and writes
each one under a temporary name that is renamed when the file is complete.

Refused before work: an output that is one of the inputs (also through a link or another spelling of
the path), two outputs with the same path, an existing file without --overwrite, a directory, a
missing or unwritable folder, and a video output whose suffix names no container FFmpeg writes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import ReelfaceError


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_container(path: Path, label: str) -> None:
    """The suffix must name a container libavformat can write (it picks the format from the suffix)."""
    import av

    if not path.suffix:
        raise ReelfaceError(f"{label} {path} has no file extension; name the container, e.g. {path}.mp4")
    try:
        av.open(str(path.with_name(f".{uuid.uuid4().hex}{path.suffix}")), "w").close()
    except ValueError:
        raise ReelfaceError(f"{label} {path}: unknown video container '{path.suffix}'; "
                            "use .mp4, .mov or .mkv") from None


def check_outputs(outputs: dict[str, str | Path | None], inputs: list[str | Path], overwrite: bool,
                  videos: tuple[str, ...] = ()) -> dict[str, Path]:
    """Check each named output (label -> path; None is skipped) against the inputs, each other and the
    disk; `videos` names the labels whose suffix must be a video container. Returns the paths."""
    paths = {label: Path(p).expanduser() for label, p in outputs.items() if p is not None}
    seen: dict[Path, str] = {}
    for label, path in paths.items():
        for source in inputs:
            if _same_file(path, Path(source)):
                raise ReelfaceError(f"{label} {path} is the input file {source}; reelface never writes over "
                                    "its input, choose another name")
        key = path.resolve()
        if key in seen:
            raise ReelfaceError(f"{label} and {seen[key]} are the same file {path}; give them different names")
        seen[key] = label
        if path.is_dir():
            raise ReelfaceError(f"{label} {path} is a directory; give a file name such as {path / 'out'}"
                                f"{'.mp4' if label in videos else '.json'}")
        if path.exists() and not overwrite:
            raise ReelfaceError(f"{label} {path} already exists; pass --overwrite to replace it")
        check_folder(path.parent, label)
        if label in videos:
            check_container(path, label)
    return paths


def check_folder(folder: Path, label: str) -> None:
    """The folder exists and this process can create files in it."""
    if not folder.is_dir():
        what = "is a file, not a directory" if folder.exists() else "does not exist"
        raise ReelfaceError(f"{label} directory {folder} {what}; create it first or choose another location")
    try:  # os.access() says yes to root even on read-only mounts: really try
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ReelfaceError(f"cannot write to the {label} directory {folder} ({exc.strerror}); "
                            "choose a writable location") from None


def temp_path(path: Path) -> Path:
    """A hidden name beside `path`, same suffix (libavformat picks the format from it)."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def written(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `path`, on any failure it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise ReelfaceError(f"writing {path} failed ({exc.strerror or exc}); check the disk space and "
                            "permissions") from None
    finally:
        tmp.unlink(missing_ok=True)
