"""Files the explorer's Export button sends to the kernel, written next to the notebook.

The page sends ``{"protocol": 1, "type": "export", "seq": n, "files": [{"name": ..., "mime": ...}]}``
with one binary buffer per file (the graph as SVG, the panels as PNG).  Names are checked
against a strict pattern (no folders, no dot-files, only ``.svg`` / ``.png``), sizes are capped,
and every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so an existing file is either kept whole or replaced whole — never half written.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .widget_protocol import MAX_EXPORT_BYTES, ProtocolError, short

_NAME = re.compile(r"^hessexplore-[A-Za-z0-9_.-]{1,120}\.(svg|png)$")
_MIME = {"svg": "image/svg+xml", "png": "image/png"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bytes(b) -> bytes:
    if isinstance(b, (bytes, bytearray)):
        return bytes(b)
    if isinstance(b, memoryview):
        return b.tobytes()
    raise ProtocolError(f"an exported file must arrive as a binary buffer, got {type(b).__name__}")


def validate(content: dict, buffers) -> list[tuple[str, bytes]]:
    """``[(name, data), ...]`` from an ``export`` message; :class:`ProtocolError` if anything is off."""
    files = content.get("files")
    if not isinstance(files, list) or not files or len(files) > 8:
        raise ProtocolError(f"'export' needs 'files', a list of 1 to 8 file descriptions, got {short(files)}")
    buffers = list(buffers or [])
    if len(buffers) != len(files):
        raise ProtocolError(f"'export' lists {len(files)} files but carries {len(buffers)} buffers")
    out = []
    for f, b in zip(files, buffers):
        name = f.get("name") if isinstance(f, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise ProtocolError(f"exported file name {short(name, 60)} is not allowed: names look like "
                                "'hessexplore-panels.png' (letters, digits, '.', '_', '-'; .svg or .png)")
        data = _bytes(b)
        if len(data) > MAX_EXPORT_BYTES:
            raise ProtocolError(f"exported file {name} is {len(data):,} bytes; at most {MAX_EXPORT_BYTES:,}")
        ext = name.rsplit(".", 1)[1]
        if ext == "png" and not data.startswith(_PNG_MAGIC):
            raise ProtocolError(f"exported file {name} is not a PNG image")
        if ext == "svg" and b"<svg" not in data[:4096]:
            raise ProtocolError(f"exported file {name} is not an SVG image")
        out.append((name, data))
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".hessexplore-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_exports(folder, files: list[tuple[str, bytes]]) -> dict:
    """Write ``files`` into ``folder`` atomically.  Returns the ``exported`` trait's payload:
    ``{files: [absolute paths], dir, error: None | str}`` (an OSError becomes ``error``)."""
    folder = Path(folder)
    written: list[str] = []
    try:
        for name, data in files:
            path = folder / name
            _atomic_write(path, data)
            written.append(str(path.resolve()))
    except OSError as exc:
        return {"files": written, "dir": str(folder),
                "error": f"could not write {name} into {folder}: {exc.strerror or exc}"}
    return {"files": written, "dir": str(folder.resolve()), "error": None}

