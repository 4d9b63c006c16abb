"""Matching and pricing (SPEC §5-§6) on generated days of 20 000, 1M and 10M taps, with peers.

Every stage of ``tongka.testing.kernel_registry`` is timed, fast and (where it can finish) its
reference twin; then the same pairing and transfer detection in DuckDB SQL and in pandas on
the same day (``bench/peers.py``); then peak memory and JIT compile time, each in a fresh
process. ``make bench`` prints a table of best times and ratios at the end. Targets (never
asserted): 10M taps matched and priced in at most 3 s after warm-up, faster than DuckDB, peak
memory under 3 GB, and a second process compiles nothing (that one is asserted: it is a
property of the cache, not a timing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import peers  # bench/peers.py (pytest puts this directory on sys.path)
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearing.fast import match_and_price_fast
from tariffs.load import load_tariff_set
from tongka.testing.kernel_registry import KERNELS, KernelCase

TARIFFS = load_tariff_set()
ROOT = Path(__file__).resolve().parent.parent


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _rounds(benchmark, n: int) -> int:  # type: ignore[no-untyped-def]
    return 1 if benchmark.disabled else (5 if n <= 1_000_000 else 3)


@pytest.mark.parametrize("side", ["fast", "reference"])
@pytest.mark.parametrize("case", KERNELS, ids=[c.name for c in KERNELS])
def test_bench_stage(benchmark, case: KernelCase, side: str, clear_size: int,  # type: ignore[no-untyped-def]
                     clear_taps: pa.Table, record_timing) -> None:
    """One registry stage, fast or reference, on a day; smoke runs also check equality."""
    if side == "reference" and case.reference_max_taps is not None \
            and clear_size > case.reference_max_taps:
        pytest.skip(f"the reference twin of {case.name} is not timed on {clear_size:,} taps "
                    f"(its limit: {case.reference_max_taps:,})")
    inp = case.prepare(clear_taps, TARIFFS)
    run = case.fast if side == "fast" else case.reference
    benchmark.group = f"clear {size_label(clear_size)}: {case.name}"
    rounds = _rounds(benchmark, clear_size) if side == "fast" else 1
    out = benchmark.pedantic(run, args=(inp,), rounds=rounds, iterations=1,
                             warmup_rounds=0 if benchmark.disabled or side != "fast" else 1)
    if benchmark.disabled and side == "fast":  # smoke: the stage still equals its twin
        case.assert_equal(out, case.reference(inp))
    if not benchmark.disabled:
        best = benchmark.stats.stats.min
        record_timing(f"{case.name}/{side}", clear_size, best)
        benchmark.extra_info.update(taps=clear_taps.num_rows, taps_per_s=round(
            clear_taps.num_rows / best))


def test_bench_peer_duckdb(benchmark, clear_size: int, clear_taps: pa.Table,  # type: ignore[no-untyped-def]
                           bench_day, record_timing, record_note) -> None:
    """DuckDB: the pairing and chain query on an in-memory table of the same day."""
    con = peers.duckdb_connection(clear_taps, peers.peer_tables(TARIFFS, bench_day))
    benchmark.group = f"clear {size_label(clear_size)}: peers"
    n_legs = benchmark.pedantic(peers.duckdb_pair_and_chain, args=(con,),
                                rounds=_rounds(benchmark, clear_size), iterations=1)
    _compare_with_fast("duckdb", peers.duckdb_legs(con), clear_taps, n_legs, benchmark,
                       clear_size, record_timing, record_note)


def test_bench_peer_pandas(benchmark, clear_size: int, clear_taps: pa.Table,  # type: ignore[no-untyped-def]
                           bench_day, record_timing, record_note) -> None:
    """pandas: the same pairing and chains, vectorised, on a DataFrame of the same day."""
    frame = clear_taps.to_pandas()
    tables = peers.peer_tables(TARIFFS, bench_day)
    benchmark.group = f"clear {size_label(clear_size)}: peers"
    legs = benchmark.pedantic(peers.pandas_pair_and_chain, args=(frame, tables),
                              rounds=_rounds(benchmark, clear_size), iterations=1)
    _compare_with_fast("pandas", legs, clear_taps, len(legs), benchmark, clear_size,
                       record_timing, record_note)


def _compare_with_fast(name, peer_legs, taps, n_legs, benchmark, n, record_timing,  # type: ignore[no-untyped-def]
                       record_note) -> None:
    """Pairing must agree leg for leg (the peers are only fair if they do the same work)."""
    fast = match_and_price_fast(taps, TARIFFS).select(peers.PEER_COLUMNS).to_pandas()
    assert n_legs == len(fast), f"{name} finds {n_legs} legs, the kernels {len(fast)}"
    key = ["issuer", "card_id", "board_ts_ms", "board_card_seq"]
    both = fast.merge(peer_legs, on=key, suffixes=("", "_peer"), validate="one_to_one")
    assert len(both) == len(fast)
    assert (both["status"] == both["status_peer"]).all(), f"{name} pairs taps differently"
    same_chain = ((both["chain"] == both["chain_peer"])
                  & (both["transfer_no"] == both["transfer_no_peer"])).mean()
    if not benchmark.disabled:
        record_timing(f"peer {name}", n, benchmark.stats.stats.min)
        record_note(f"{name} {size_label(n)}: pairing equal on all {len(fast):,} legs; "
                    f"chain and transfer_no equal on {same_chain:.2%} (first_boarding windows "
                    "approximated, see bench/peers.py)")


def _ingested_store(n: int, clear_file: Path, day) -> Path:  # type: ignore[no-untyped-def]
    """A data directory and SQLite store holding the day, ingested once and cached."""
    from clearing.db import make_engine
    from clearing.ingest import ingest_file
    from tongka.schema import upgrade
    from tongka.testing.generate import write_day

    store = clear_file.with_name(clear_file.stem + "-store")
    if store.exists():
        return store
    build = store.with_name(f"{store.name}.{os.getpid()}.tmp")  # xdist workers may race
    shutil.rmtree(build, ignore_errors=True)
    batches = write_day(build / "batches", pq.read_table(clear_file), day)
    engine = make_engine(f"sqlite:///{build / 'tongka.sqlite'}")
    upgrade(engine)
    for path in batches:
        report = ingest_file(engine, build / "data", path, TARIFFS.registry)
        assert report.quarantined == 0 and report.duplicates == 0
    engine.dispose()
    shutil.rmtree(build / "batches")
    try:
        build.rename(store)  # atomic: a store directory is complete or absent
    except OSError:  # another worker finished first
        shutil.rmtree(build, ignore_errors=True)
    return store


def test_bench_clear_day(benchmark, clear_size: int, clear_file: Path, bench_day,  # type: ignore[no-untyped-def]
                         record_timing) -> None:
    """The whole ``tongka clear`` stage: read the day's taps from the store, price, write legs."""
    from clearing.day import clear_day
    from clearing.db import make_engine

    store = _ingested_store(clear_size, clear_file, bench_day)
    engine = make_engine(f"sqlite:///{store / 'tongka.sqlite'}")
    benchmark.group = f"clear {size_label(clear_size)}: tongka clear"
    result = benchmark.pedantic(clear_day, args=(store / "data", bench_day, TARIFFS),
                                kwargs={"engine": engine},
                                rounds=1 if benchmark.disabled else 3, iterations=1)
    engine.dispose()
    assert result.taps == pq.read_metadata(clear_file).num_rows and result.legs > 0
    if not benchmark.disabled:
        record_timing("tongka clear (read, price, write)", clear_size, benchmark.stats.stats.min)


MEMORY_CHILD = r"""
import json, sys, time
import pyarrow.parquet as pq
from clearing.fast import match_and_price_fast
from tariffs.load import load_tariff_set

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
ts = load_tariff_set()
taps = pq.read_table(sys.argv[1])
match_and_price_fast(taps.slice(0, 1000), ts)  # load the JIT cache and the tables first
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
start = time.perf_counter()
legs = match_and_price_fast(taps, ts)
seconds = time.perf_counter() - start
print(json.dumps({"rss_before_mb": before, "peak_mb": status("VmHWM:"), "seconds": seconds,
                  "legs": legs.num_rows, "taps": taps.num_rows,
                  "taps_mb": taps.nbytes / 2**20, "legs_mb": legs.nbytes / 2**20}))
"""


def test_bench_peak_memory(benchmark, clear_size: int, clear_file: Path, record_note) -> None:  # type: ignore[no-untyped-def]
    """Peak RSS of a fresh process while it matches and prices the day (input included).

    Uses ``benchmark`` (timing the whole child process once) so that ``--benchmark-only``
    keeps it.
    """
    benchmark.group = f"clear {size_label(clear_size)}: process"

    def child() -> str:
        return subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(clear_file)],
                              capture_output=True, text=True, check=True, cwd=ROOT).stdout

    m = json.loads(benchmark.pedantic(child, rounds=1, iterations=1))
    assert m["legs"] > 0 and m["peak_mb"] >= m["rss_before_mb"] > 0
    record_note(f"peak memory {size_label(clear_size)}: {m['peak_mb']:,.0f} MB RSS during "
                f"match-and-price, {m['rss_before_mb']:,.0f} MB before it (the {m['taps']:,} "
                f"taps are {m['taps_mb']:,.0f} MB of Arrow; the {m['legs']:,} legs "
                f"{m['legs_mb']:,.0f} MB); that first call in the process took "
                f"{m['seconds']:.2f} s")


JIT_CHILD = r"""
import json, time
t0 = time.perf_counter()
import pyarrow as pa
from clearing import kernels, sorting
from clearing.fast import match_and_price_fast
from clearing.taps import TAP_SCHEMA
from tariffs.load import load_tariff_set
ts = load_tariff_set()
tap = dict(operator=101, device_id=1, device_seq=1, card_id=5, card_seq=1, issuer=1, product=0,
           media=0, ts_ms=1764000000000, city=420100, line=1, stop=0, tap_type=0, debited_fen=-1)
taps = pa.Table.from_pylist([tap], schema=TAP_SCHEMA)
t1 = time.perf_counter()
match_and_price_fast(taps, ts)
t2 = time.perf_counter()
kernel_fns = [f for m in (kernels, sorting) for f in vars(m).values()
              if hasattr(f, "stats") and hasattr(f, "py_func")]
print(json.dumps({
    "import_s": t1 - t0, "first_call_s": t2 - t1,
    "compiled": sum(sum(f.stats.cache_misses.values()) for f in kernel_fns),
    "loaded": sum(sum(f.stats.cache_hits.values()) for f in kernel_fns),
}))
"""


def test_bench_jit_cold_and_warm(benchmark, tmp_path: Path, record_note) -> None:  # type: ignore[no-untyped-def]
    """A process with an empty cache compiles; a second process with that cache compiles nothing.

    ``benchmark`` times the pair of processes once (so that ``--benchmark-only`` keeps it).
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    benchmark.group = "clear: JIT cold and warm process"

    def two_processes() -> list[dict]:
        runs = []
        for _ in range(2):
            start = time.perf_counter()
            child = subprocess.run([sys.executable, "-c", JIT_CHILD], capture_output=True,
                                   text=True, check=True, cwd=ROOT, env=env)
            runs.append({**json.loads(child.stdout), "process_s": time.perf_counter() - start})
        return runs

    cold, warm = benchmark.pedantic(two_processes, rounds=1, iterations=1)
    assert cold["compiled"] > 0, "the first process should have compiled the kernels"
    assert warm["compiled"] == 0, f"the second process compiled {warm['compiled']} kernels"
    assert warm["loaded"] > 0
    record_note(f"JIT: cold process compiles {cold['compiled']} kernels, first call "
                f"{cold['first_call_s']:.2f} s (process {cold['process_s']:.1f} s); warm process "
                f"compiles 0 and loads {warm['loaded']}, first call {warm['first_call_s']:.2f} s "
                f"(process {warm['process_s']:.1f} s)")
