"""Atomic file writes: a save either completes or leaves the previous file untouched.

Every writer in hessexplore (:meth:`Run.save`, :meth:`Tracker.save`, the report folder) goes
through :func:`atomic_write`: the new content is written to a temporary file *in the same folder*
(so the final rename never crosses a file system), flushed and ``fsync``-ed, then moved over the
destination with :func:`os.replace` (atomic on POSIX and Windows), and the folder entry is synced.
A kill, a full disk or an exception mid-write leaves the old file as it was and no temporary
file behind (removed on any exception; a hard kill may leave one ``.<name>.*.tmp``, never a
truncated destination).  The new file gets the permissions of the file it replaces, or the
usual ``0o666 & ~umask`` for a new one; a symbolic link keeps pointing at the (replaced) target.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator, Union

__all__ = ["atomic_write", "atomic_open"]

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode``: "w" (text, ``encoding``) or "wb" (bytes).  On any exception (BaseException
    included) the temporary file is removed, ``path`` is untouched, and the exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes with mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_symlink():          # replace the file the link points to, not the link itself
        path = Path(os.path.realpath(path))
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        try:
            perm = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            perm = 0o666 & ~_umask()
        os.chmod(tmp, perm)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            fd = -1
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: PathLike, data: Union[str, bytes, Callable[[IO], None]], *,
                 encoding: str = "utf-8") -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path.

    ``data``: a str (written as text in ``encoding``), bytes, or a callable ``write(f)`` that
    writes to a binary file object (e.g. ``lambda f: fig.savefig(f, format="png")``).
    """
    if isinstance(data, str):
        with atomic_open(path, "w", encoding=encoding) as f:
            f.write(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        with atomic_open(path, "wb") as f:
            f.write(data)
    elif callable(data):
        with atomic_open(path, "wb") as f:
            data(f)
    else:
        raise TypeError(f"atomic_write takes str, bytes or a callable, got {type(data).__name__}")
    return Path(path)
