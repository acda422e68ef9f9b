"""The outage spool: what a webhook could not write to the database, kept on local disk.

Records are JSON lines appended under an exclusive lock and fsync'd before the caller
hears their ticket number. Replay moves the file aside under the same lock (so no append
is lost to the move), applies each record idempotently, and deletes the file only when
every record has been applied; a replay that stops half-way is simply run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger("ivr.spool")

READ_SIZE = 1 << 20
HEAD_SIZE = 256  # the first bytes a counted spool file is told apart by


@dataclass(frozen=True)
class ReplayResult:
    read: int = 0
    applied: int = 0
    already_present: int = 0
    unreadable: int = 0  # cut short or not applicable: kept in spool.failed.jsonl
    busy: bool = False


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: it may write fewer than asked (a disk
    filling up) and says so only by what it returns."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "no byte written to the spool")  # ENOSPC
        view = view[written:]


class _LineCounter:
    """Records (non-blank lines) in spool files, read incrementally: the files are only
    ever appended to, moved aside whole or removed, so what was counted up to the last
    complete line stays counted while the file is the same one (device and inode, and the
    same first bytes: a file created after a replay removed the last may be given its
    inode number) and no shorter. ``/healthz``, ``/metrics`` and the sender ask every few
    seconds, and during a long outage the spool is exactly the file that grows: each asks
    for the new bytes only, not the whole file again."""

    def __init__(self):
        # id, first bytes, offset, lines
        self._seen: dict[Path, tuple[tuple[int, int], bytes, int, int]] = {}

    def __call__(self, *paths: Path) -> int:
        return sum(self._count(path) for path in paths)

    def _count(self, path: Path) -> int:
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            self._seen.pop(path, None)
            return 0
        with handle:
            stat = os.fstat(handle.fileno())
            identity = (stat.st_dev, stat.st_ino)
            known, head, offset, lines = self._seen.get(path, (None, b"", 0, 0))
            if known != identity or offset > stat.st_size or handle.read(len(head)) != head:
                offset, lines = 0, 0
            if not offset:
                handle.seek(0)
                head = handle.read(HEAD_SIZE)
            handle.seek(offset)
            tail = b""
            while chunk := handle.read(READ_SIZE):
                data = tail + chunk
                end = data.rfind(b"\n") + 1
                lines += sum(1 for line in data[:end].split(b"\n") if line.strip())
                offset += end
                tail = data[end:]
            self._seen[path] = (identity, head, offset, lines)
            # A last line without its newline (a write cut short) is a record too.
            return lines + (1 if tail.strip() else 0)


class Spool:
    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "spool.jsonl"
        self.replaying = folder / "spool.replaying.jsonl"
        self.failed = folder / "spool.failed.jsonl"
        self._records_in = _LineCounter()

    @contextlib.contextmanager
    def _lock(self, name: str, blocking: bool = True) -> Iterator[bool]:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.folder / name, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock("spool.lock"):
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                # A record cut short by a crash mid-write has no newline: start on a line of
                # our own, or this record would be glued to it and both be unreadable.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                try:
                    _write_all(fd, line)
                    os.fsync(fd)
                except OSError:
                    # Half a record is no record: leave the file as it was, and let the
                    # caller's request fail (Twilio's fallback) rather than tell them a
                    # ticket number that was never kept.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.folder)

    def depth(self) -> int:
        """Records waiting to be replayed."""
        return self._records_in(self.path, self.replaying)

    def set_aside(self) -> int:
        """Records a replay could not apply, kept in spool.failed.jsonl for an operator:
        each may be a ticket a caller was told, so they are counted wherever the depth is."""
        return self._records_in(self.failed)

    def replay(self, apply: Callable[[dict], bool],
               transient: Callable[[BaseException], bool] = lambda exc: False
               ) -> ReplayResult:
        """Apply every record; ``apply`` returns False for one already in the database.
        An error ``transient`` says is passing (the database is still away, or has no
        tables yet: ``storage.database_unavailable``) stops the replay, to be run again;
        any other error sets that record aside in spool.failed.jsonl."""
        with self._lock("replay.lock", blocking=False) as mine:
            if not mine:
                return ReplayResult(busy=True)
            with self._lock("spool.lock"):
                if not self.replaying.exists():
                    if not self.path.exists():
                        return ReplayResult()
                    os.replace(self.path, self.replaying)
                    _fsync_dir(self.folder)
            read = applied = present = 0
            set_aside: list[str] = []
            with open(self.replaying, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    read += 1
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                    if not isinstance(record, dict):
                        # The expected case after a crash mid-write: no traceback to read.
                        log.warning("spool record %s is not a whole record (a write cut "
                                    "short by a crash): set aside in %s",
                                    read, self.failed.name)
                        set_aside.append(line if line.endswith("\n") else line + "\n")
                        continue
                    try:
                        done = apply(record)
                    except Exception as exc:  # a record this release cannot apply
                        if transient(exc):
                            raise
                        log.exception("spool record %s set aside in %s", read, self.failed.name)
                        set_aside.append(line if line.endswith("\n") else line + "\n")
                        continue
                    if done:
                        applied += 1
                    else:
                        present += 1
            self._set_aside(set_aside)
            os.unlink(self.replaying)
            _fsync_dir(self.folder)
            return ReplayResult(read, applied, present, len(set_aside))

    def _set_aside(self, lines: list[str]) -> None:
        """Keep records a replay could not apply in spool.failed.jsonl, each once: a pass
        the database cut short reads the same records again, and so does one a crash
        stopped after this and before the replaying file was removed."""
        if not lines:
            return
        kept = set()
        if self.failed.exists():
            with open(self.failed, encoding="utf-8", errors="replace") as handle:
                kept = set(handle)
        # Like the spool, readable by the service alone: a record holds a caller's number.
        fd = os.open(self.failed, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with open(fd, "a", encoding="utf-8") as failed:
            for line in lines:
                if line not in kept:
                    kept.add(line)
                    failed.write(line)
            failed.flush()
            os.fsync(failed.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
