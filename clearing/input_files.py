"""The one guard on input files: inside the inbox, a regular file, readable, not too large.

Both the canonical batches (``clearing.ingest``) and the raw reader exports go through it, so
one condition has one code; it touches no database, so the readers may use it too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from clearing.errors import InputError
from tariffs.error_codes import ErrorCode

MAX_BATCH_BYTES = 1 << 30  # 1 GiB: ten million canonical taps take about 200 MB


def read_input_bytes(path: Path, *, input_dir: Path | None = None,
                     max_bytes: int = MAX_BATCH_BYTES) -> bytes:
    """The bytes of an input file, refusing a missing, outside-the-inbox or oversized one."""
    p = Path(path)
    if input_dir is not None:
        real, inbox = p.resolve(), Path(input_dir).resolve()
        if not real.is_relative_to(inbox):
            raise InputError(f"{p}: outside the allowed input directory {inbox}",
                             code=ErrorCode.INPUT_OUTSIDE_DIR)
    if not p.exists():
        raise InputError(f"{p}: no such file", code=ErrorCode.INPUT_MISSING)
    if not p.is_file():
        raise _not_a_file(p)
    size = p.stat().st_size
    if size > max_bytes:
        raise InputError(f"{p}: {size:,} bytes, more than the limit of {max_bytes:,} for one "
                         "batch; split the day into several batch files",
                         code=ErrorCode.INPUT_TOO_LARGE)
    try:
        # The path may have become a directory or a pipe since the look above: the opened file
        # is checked again, so that condition keeps its one code (INPUT_NOT_FILE, never
        # INPUT_UNREADABLE), and O_NONBLOCK means a pipe swapped in cannot hang the read.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise _not_a_file(p) from None
    except OSError as exc:  # permission denied, an I/O error of the disk, ...
        raise _unreadable(p, exc) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_file(p)
    with open(fd, "rb") as fh:
        try:
            data = fh.read(max_bytes + 1)  # never more than the limit, even if the file grows
        except OSError as exc:
            raise _unreadable(p, exc) from None
    if len(data) > max_bytes:
        raise InputError(f"{p}: grew beyond {max_bytes:,} bytes while being read",
                         code=ErrorCode.INPUT_TOO_LARGE)
    return data


def _not_a_file(p: Path) -> InputError:
    return InputError(f"{p}: not a regular file", code=ErrorCode.INPUT_NOT_FILE)


def _unreadable(p: Path, exc: OSError) -> InputError:
    return InputError(f"{p}: cannot be read: {exc.strerror or exc}",
                      code=ErrorCode.INPUT_UNREADABLE)
