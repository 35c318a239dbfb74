"""The resumable record of a run in its work dir, and the lock that gives the work dir to one run.

- `manifest.json`: the input's identity, the chunk plan, one config digest per stage and how many runs
  opened the work dir. Written once per run.
- `journal.jsonl`: one line per finished piece of work (a chunk of a stage, or a stage-wide result such
  as "all"), appended and fsynced when it finishes, so the cost of recording a chunk does not grow with
  the video. A run killed in the middle of an append leaves a torn last line, which the next run drops.
  Each run rewrites the journal once when it opens it, without the entries its config made stale.
- `LOCK`: held (flock) by the run using the work dir; the kernel releases it when the process dies, so
  a killed run never blocks its own resume.

Result files are named relative to the work dir, so a resume finds them whatever the current directory.
Pure Python, no Ray: only the driver writes here; workers return results and the driver records them.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import ReelfaceError
from .plan import Chunk

MANIFEST_NAME, JOURNAL_NAME, LOCK_NAME = "manifest.json", "journal.jsonl", "LOCK"
MANIFEST_VERSION = 2

# Stages in pipeline order with the config sections each one's result depends on. A stage is redone
# when its digest changes, and so is every stage after it (each one consumes the previous results).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "detect": ("detect",),
    "tracks": ("detect", "track"),
    "references": ("detect", "track", "references", "restore"),  # restore: the restorer says how many it uses
    "restore": ("detect", "track", "references", "restore", "blend", "encode"),
}


def input_identity(path: str | Path) -> dict[str, Any]:
    """What tells a resumed run that the input is still the same file: size and modification time
    (hashing a multi-gigabyte master on every start would cost minutes)."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def stage_digests(cfg: Any) -> dict[str, str]:
    """One digest per stage over the config sections that stage depends on (`Config.digest`)."""
    return {stage: cfg.digest(*sections) for stage, sections in STAGE_SECTIONS.items()}


def durable_replace(tmp: Path, path: Path) -> None:
    """Give a complete file its final name so that it survives a crash of the machine: the data is
    synced before the rename and the folder after it (a record may name it as soon as this returns)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    durable_replace(tmp, path)


def lock_work_dir(work_dir: Path) -> int:
    """Take the work dir for this process; refuse clearly when another run holds it."""
    fd = os.open(work_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ReelfaceError(f"work dir {work_dir} is in use by another reelface run (pid {holder}); wait for it "
                            "to finish, or give this run another output or --work-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def read_journal(work_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The journal's entries in the order they finished; a torn last line (a killed run) is skipped."""
    path = Path(work_dir) / JOURNAL_NAME
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("stage") in STAGE_SECTIONS and "name" in entry:
                yield entry


def finished(work_dir: str | Path, stage: str) -> dict[str, dict[str, Any]]:
    """name -> entry of a stage's finished work (the latest entry of each name)."""
    return {e["name"]: e for e in read_journal(work_dir) if e["stage"] == stage}


class Manifest:
    """The work dir's record of a run: plan, digests and what each stage finished.

    It keeps in memory only which names are done and their result files; the per-chunk numbers stay in
    the journal (`finished`, `entries`), so a long video does not grow the driver.
    """

    def __init__(self, work_dir: Path, header: dict[str, Any], done: dict[str, dict[str, str | None]], lock: int):
        self.work_dir = work_dir
        self.header = header
        self.done = done  # stage -> name -> result file (relative to the work dir) or None
        self._lock: int | None = lock
        self._journal = open(work_dir / JOURNAL_NAME, "a")

    @classmethod
    def open(
        cls,
        work_dir: str | Path,
        *,
        identity: dict[str, Any],
        plan: list[Chunk],
        digests: dict[str, str],
    ) -> tuple["Manifest", list[str]]:
        """Lock the work dir, load its record and keep what still matches, or start a new one.

        Returns the manifest and notes for the user saying what was kept and what is redone and why.
        A different input or plan starts over; a changed config redoes the stages it affects.
        """
        work_dir = Path(work_dir).absolute()
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReelfaceError(f"cannot create the work dir {work_dir}: {exc}; choose another with --work-dir") from None
        lock = lock_work_dir(work_dir)
        try:
            return cls._load(work_dir, identity, plan, digests, lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _load(cls, work_dir: Path, identity: dict[str, Any], plan: list[Chunk], digests: dict[str, str],
              lock: int) -> tuple["Manifest", list[str]]:
        header = {"version": MANIFEST_VERSION, "input": identity, "plan": [c.to_dict() for c in plan],
                  "digests": digests, "runs": 0}
        notes: list[str] = []
        old = cls._read_header(work_dir / MANIFEST_NAME, notes)
        keep: set[str] = set()
        reason = None if old is None else cls._mismatch(old, header)
        if reason:
            notes.append(f"work dir {work_dir}: {reason}; starting over")
        elif old is not None:
            header["runs"] = old.get("runs", 0)
            for stage in STAGE_SECTIONS:  # a stage is kept while it and every stage before it match
                if old["digests"].get(stage) != digests[stage]:
                    break
                keep.add(stage)
        done, counts = cls._compact(work_dir, keep)
        stale = [s for s, n in counts.items() if n and s not in keep] if old is not None and not reason else []
        for stage in stale:
            notes.append(f"work dir {work_dir}: config of the {stage} stage changed "
                         f"(sections {', '.join(STAGE_SECTIONS[stage])}); redoing it")
        kept = {s: len(v) for s, v in done.items() if v}
        if kept:
            notes.append(f"resuming from {work_dir}: finished so far " + ", ".join(f"{s} {n}" for s, n in kept.items()))
        header["runs"] += 1
        write_json_atomic(work_dir / MANIFEST_NAME, header)
        return cls(work_dir, header, done, lock), notes

    @staticmethod
    def _compact(work_dir: Path, keep: set[str]) -> tuple[dict[str, dict[str, str | None]], dict[str, int]]:
        """Rewrite the journal with only the entries of the kept stages (streamed: one entry in memory)."""
        done: dict[str, dict[str, str | None]] = {stage: {} for stage in STAGE_SECTIONS}
        counts = {stage: 0 for stage in STAGE_SECTIONS}
        tmp = work_dir / f".{JOURNAL_NAME}.{os.getpid()}.tmp"
        with open(tmp, "w") as out:
            for entry in read_journal(work_dir):
                counts[entry["stage"]] += 1
                if entry["stage"] in keep:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")
                    done[entry["stage"]][entry["name"]] = entry.get("file")
        durable_replace(tmp, work_dir / JOURNAL_NAME)
        return done, counts

    @staticmethod
    def _read_header(path: Path, notes: list[str]) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
                raise ValueError("unknown manifest version")
            return data
        except (OSError, ValueError) as exc:
            notes.append(f"{path} is unreadable ({exc}); starting over")
            return None

    @staticmethod
    def _mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
        was, now = old.get("input", {}), new["input"]
        if (was.get("size"), was.get("mtime_ns")) != (now["size"], now["mtime_ns"]):
            return f"the input changed since the last run ({was.get('path')}, size/mtime differ)"
        if old.get("plan") != new["plan"]:
            return "the chunk plan changed (run.chunk_seconds, run.context_frames or the preview length)"
        return None

    @property
    def run(self) -> int:
        """How many times this work dir was opened: 1 on the first run, 2 on the first resume..."""
        return self.header["runs"]

    @property
    def plan(self) -> list[Chunk]:
        return [Chunk.from_dict(c) for c in self.header["plan"]]

    def is_done(self, stage: str, name: str) -> bool:
        """Finished, and its result file (if it has one) is still there."""
        if name not in self.done[stage]:
            return False
        file = self.done[stage][name]
        return file is None or (self.work_dir / file).exists()

    def finished_anything(self) -> bool:
        return any(self.done.values())

    def pending(self, stage: str, chunks: Iterable[Chunk]) -> list[Chunk]:
        return [c for c in chunks if not self.is_done(stage, c.name)]

    def entries(self, stage: str) -> Iterator[dict[str, Any]]:
        """The journal entries of a stage's kept work, read back from disk (numbers included)."""
        for entry in read_journal(self.work_dir):
            if entry["stage"] == stage and entry["name"] in self.done[stage]:
                yield entry

    def mark(self, stage: str, name: str, file: str | None = None, **info: Any) -> None:
        """Record `name` (a chunk, or a stage-wide result such as "all") as finished, with its result file
        relative to the work dir. The file must already be durable (`durable_replace`)."""
        if file is not None and Path(file).is_absolute():
            raise ValueError(f"result files are named relative to the work dir, not {file}")
        entry = {"stage": stage, "name": name, "run": self.run, "finished_at": round(time.time(), 3), **info}
        if file is not None:
            entry["file"] = str(file)
        self._journal.write(json.dumps(entry, sort_keys=True) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self.done[stage][name] = entry.get("file")

    def close(self) -> None:
        """Give the work dir back (also when the process dies: the kernel drops the lock)."""
        self._journal.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
