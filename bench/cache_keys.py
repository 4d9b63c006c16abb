"""The cache key of generated benchmark days: it changes whenever the generator or the
default tariffs change, so a cached day is never one the current code would not generate."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generator_tag() -> str:
    h = hashlib.sha256()
    for path in [ROOT / "tongka" / "testing" / "generate.py",
                 *sorted((ROOT / "tariffs" / "data").rglob("*.*"))]:
        h.update(path.read_bytes())
    return h.hexdigest()[:10]
