"""Files that survive a kill and a second writer: atomic replacement, the user's file mode, a lock per file.

Used by data (its cache), train (checkpoints, config.yaml), results (tables) and plots (figures).

- :func:`atomic_write_bytes`: a reader sees the old file or the new one, never half of one; the new file
  gets the mode any other file would (0666 less the umask), not the 0600 of a temporary file.
- :func:`locked`: writers of one file take turns (read, merge, write without losing another's rows).
  The lock is ``.<name>.lock`` beside the file (git-ignored); it holds no data and may stay behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it, then restore it
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (temporary file, fsync, rename) with the user's umask; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def locked(path: str | os.PathLike, timeout: float = 600.0) -> Iterator[Path]:
    """Hold the lock of ``path`` (other processes wait) for a read-merge-write; yields the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.parent / f".{path.name}.lock", timeout=timeout, mode=0o666 & ~_umask())
    try:
        with lock:
            yield path
    except Timeout:
        raise TimeoutError(f"{path} stayed locked by another writer for {timeout:g} s; if no other process "
                           f"is writing it, delete {lock.lock_file}") from None
