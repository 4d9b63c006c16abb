"""The one guard on input files: inside the inbox, a regular file, readable, not too large.

Both the canonical batches (``clearing.ingest``) and the raw reader exports go through it, so
one condition has one code; it touches no database, so the readers may use it too.
"""

from __future__ import annotations

from pathlib import Path

from clearing.errors import InputError

MAX_BATCH_BYTES = 1 << 30  # 1 GiB: ten million canonical taps take about 200 MB


def read_input_bytes(path: Path, *, input_dir: Path | None = None,
                     max_bytes: int = MAX_BATCH_BYTES) -> bytes:
    """The bytes of an input file, refusing a missing, outside-the-inbox or oversized one."""
    p = Path(path)
    if input_dir is not None:
        real, inbox = p.resolve(), Path(input_dir).resolve()
        if not real.is_relative_to(inbox):
            raise InputError(f"{p}: outside the allowed input directory {inbox}",
                             code="INPUT_OUTSIDE_DIR")
    if not p.exists():
        raise InputError(f"{p}: no such file", code="INPUT_MISSING")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file", code="INPUT_NOT_FILE")
    size = p.stat().st_size
    if size > max_bytes:
        raise InputError(f"{p}: {size:,} bytes, more than the limit of {max_bytes:,} for one "
                         "batch; split the day into several batch files", code="INPUT_TOO_LARGE")
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)  # never more than the limit, even if the file grows
    except OSError as exc:  # permission denied, an I/O error of the disk, ...
        raise InputError(f"{p}: cannot be read: {exc.strerror or exc}",
                         code="INPUT_UNREADABLE") from None
    if len(data) > max_bytes:
        raise InputError(f"{p}: grew beyond {max_bytes:,} bytes while being read",
                         code="INPUT_TOO_LARGE")
    return data
