"""The run folder: one writer at a time, no writes through links, files replaced atomically.

Two ``mmrbench eval`` on one ``--out`` would both pay for every request and one's compaction would
drop the other's lines, so a run holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for its whole
life. The kernel releases it when the process dies (even on SIGKILL), so no stale lock outlives a
crash; the file keeps the holder's pid and command only to name it in the second run's error.

Every file of a run is written either by appending through a descriptor opened with ``O_NOFOLLOW``
or by writing a fresh temporary file (``mkstemp``: created, never opened through a link) that
``os.replace`` moves over the target; a predictions file that is a symlink is refused, so a target
outside the run folder is never truncated.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from mmrbench.errors import ConfigError

LOCK = ".lock"
#: the files of a run folder; none of them may be a link
RUN_FILES = ("predictions.jsonl", "result.json", "run.json", LOCK)


def prepare_run_dir(out: str | os.PathLike, files: tuple[str, ...] = RUN_FILES) -> Path:
    """Create ``out`` (a folder) and refuse links among its run files, before any work starts."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} is an existing file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {p}: cannot create the folder ({exc.strerror})") from None
    for name in files:
        f = p / name
        if f.is_symlink():
            raise ConfigError(f"{f} is a symbolic link: a run never writes through links (remove it or use another --out)")
        if f.exists() and not f.is_file():
            raise ConfigError(f"{f} is not a regular file")
    return p


class RunLock:
    """Exclusive, non-blocking lock on a run folder (context manager)."""

    def __init__(self, out: str | os.PathLike, command: list[str] | None = None):
        self.dir = Path(out)
        self.path = self.dir / LOCK
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, say so once
            print("mmrbench: warning: no file locking on this platform; do not start two runs on one --out",
                  file=sys.stderr)
            return self
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot open the run lock ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(f"{self.dir} is in use by another run ({holder}); wait for it to finish or use "
                              f"another --out") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(self.command or sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing drops the flock
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0)
        d = json.loads(raw.decode("utf-8") or "{}")
        who = f"pid {d.get('pid')} on {d.get('host')}, started {d.get('started')}"
        if d.get("command"):
            who += f": {d['command']}"
        return who
    except (OSError, ValueError, AttributeError):
        return "holder unknown"


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data``: a fresh temporary file in the same folder, then ``os.replace``.

    ``mkstemp`` creates the temporary file exclusively (a planted link is never followed) and
    ``os.replace`` swaps the directory entry, so a link at ``path`` is replaced, not written through."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str | os.PathLike, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
