"""Reader adapters, records per second on a 1M-record file of each raw format.

``make bench`` runs these in full: each file is generated once (``tongka.testing.synth``) and cached
under ``bench/.cache/``; each parse includes every check, the TAC (one HMAC per record) or
the ed25519 signature (one verify per scan), and tokenisation (one HMAC per distinct card).
Target: >= 200,000 records/s for the card format. In the normal test run (benchmarks
disabled) each runs once on a small file as a smoke test.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from readers.config import ReaderConfig
from readers.registry import get_adapter
from tongka.testing.raw_writers import render
from tongka.testing.synth import identities, sample_taps

CACHE = Path(__file__).resolve().parent / ".cache"
FULL = 1_000_000
SMOKE = 3_000
CONFIG = ReaderConfig.demo()
FORMATS = ("card", "nfc", "wearable", "ssc", "qr")


def raw_file(fmt: str, n: int) -> Path:
    """One file of ``n`` records of ``fmt`` (all operators together), generated once."""
    adapter = get_adapter(fmt)
    path = CACHE / f"readers-{fmt}-{n}{adapter.suffix}"
    if not path.exists():
        media = tuple(int(m) for m in adapter.media)
        taps = sample_taps(
            n, seed=20261124, media=media, day=dt.date(2026, 11, 24), cards=max(1, n // 5)
        )
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel workers never share one
        tmp.write_bytes(render(fmt, taps, identities(taps), CONFIG))
        tmp.replace(path)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_bench_reader(benchmark, fmt: str) -> None:  # type: ignore[no-untyped-def]
    n = SMOKE if benchmark.disabled else FULL
    path = raw_file(fmt, n)
    adapter = get_adapter(fmt)
    benchmark.group = "readers: parse 1M records"
    rounds = 3 if fmt == "card" else 1
    result = benchmark.pedantic(adapter.parse, args=(path, CONFIG), rounds=rounds, iterations=1)
    assert result.rows == n and result.taps.num_rows == n and result.errors == []
    if not benchmark.disabled:
        per_s = n / benchmark.stats.stats.min
        benchmark.extra_info["records_per_s"] = round(per_s)
        print(f"\n{fmt}: {per_s:,.0f} records/s ({n:,} records, best of {rounds})")
