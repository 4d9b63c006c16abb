"""The one way the engine writes a file: whole or not at all, and durable once written.

Every file goes to a temporary name in its directory, is flushed and fsynced, renamed over the
final name (or hard-linked to it, for files that must never be replaced), and the directory is
fsynced so the name itself survives a power cut. A reader therefore sees a whole file or none;
a crash leaves only ``*.tmp`` files, which the next ingest of that day removes
(``clearing.ingest.remove_orphans``). Tap files, legs, signals, deny lists, statements, exports
and bank payment files all go through here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a new or renamed name) durable."""
    if os.name != "posix":  # directories cannot be opened for fsync elsewhere
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextmanager
def atomic_file(path: Path, mode: str = "wb", *, encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO[Any]]:
    """An open file that becomes ``path`` when the block ends without error (replacing what was
    there), and leaves nothing behind when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as fh:
        fh.write(data)
    return path


def write_text(path: Path, text: str) -> Path:
    with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path


def copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` wholly or not at all."""
    with open(src, "rb") as fin, atomic_file(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def create_once(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, never replacing a file (FileExistsError if it exists):
    the bytes go to a fsynced temporary file that is hard-linked to the name (a link fails
    where a rename would overwrite), and every directory created on the way is fsynced."""
    path = Path(path)
    new_dirs = [d for d in reversed(path.parents) if not d.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    for directory in {path.parent, *(d.parent for d in new_dirs)}:
        fsync_dir(directory)
