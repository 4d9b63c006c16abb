"""Hostile input (issue 6): files far too big, Parquet bombs, truncations, pipes, paths that
escape the input directory. Each gets a clear InputError, nothing is written, and memory
stays bounded (nothing is read that the limits refuse)."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import resource
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, func, select

from clearing.batches import Batch
from clearing.errors import InputError
from clearing.ingest import MAX_BATCH_BYTES, ingest_file
from clearing.service_day import local_ms
from clearing.taps import TAP_SCHEMA, TapType, taps_table
from tariffs.registry import FLAT, load_registry

REG = load_registry()
DAY = dt.date(2026, 11, 24)
BUS = next(ln for ln in REG.lines.values() if ln.network == FLAT)
META = {b"tongka.service_day": DAY.isoformat().encode(),
        b"tongka.operator": str(BUS.operator).encode()}


def tap(i: int) -> dict:
    stop = BUS.stops[0]
    return dict(operator=BUS.operator, device_id=1, device_seq=i, card_id=i, card_seq=i, issuer=1,
                product=0, media=0, ts_ms=local_ms(DAY, 9) + i, city=REG.stops[stop].city,
                line=BUS.line, stop=stop, tap_type=int(TapType.FLAT), debited_fen=160)


def good_file(path: Path, n: int = 100) -> Path:
    pq.write_table(taps_table([tap(i) for i in range(n)]).replace_schema_metadata(META), path)
    return path


def refused(engine: Engine, data_dir: Path, path: Path, code: str, **kw: object) -> InputError:
    with pytest.raises(InputError) as err:
        ingest_file(engine, data_dir, path, REG, **kw)  # type: ignore[arg-type]
    assert err.value.code == code, str(err.value)
    assert err.value.exit_code == 2
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(Batch)).scalar_one() == 0
    assert not (data_dir / "taps").exists() or not any((data_dir / "taps").rglob("*.parquet"))
    return err.value


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_file_larger_than_any_plausible_day_is_refused_unread(engine: Engine,
                                                                tmp_path: Path) -> None:
    huge = tmp_path / "huge.parquet"
    with open(huge, "wb") as fh:  # sparse: 4 GiB on paper, nothing on disk
        fh.truncate(4 * MAX_BATCH_BYTES)
    before = peak_rss_mb()
    err = refused(engine, tmp_path, huge, "INPUT_TOO_LARGE")
    assert "split the day" in str(err)
    assert peak_rss_mb() - before < 200  # the file was never read into memory


def test_the_size_limit_is_configurable(engine: Engine, tmp_path: Path) -> None:
    path = good_file(tmp_path / "b.parquet")
    refused(engine, tmp_path, path, "INPUT_TOO_LARGE", max_bytes=path.stat().st_size - 1)
    assert ingest_file(engine, tmp_path, path, REG, max_bytes=path.stat().st_size).accepted == 100


def test_a_parquet_bomb_is_refused_from_its_footer(engine: Engine, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two million identical rows compress to a few kilobytes; the row limit stops them
    before a single page is decoded."""
    n = 2_000_000
    cols = {f.name: pa.array(np.zeros(n, dtype=f.type.to_pandas_dtype())) for f in TAP_SCHEMA}
    bomb = tmp_path / "bomb.parquet"
    pq.write_table(pa.table(cols, schema=TAP_SCHEMA).replace_schema_metadata(META), bomb,
                   compression="zstd")
    assert bomb.stat().st_size < 200_000

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a data page was decoded")

    monkeypatch.setattr(pq.ParquetFile, "read", no_decoding)
    err = refused(engine, tmp_path, bomb, "INPUT_TOO_LARGE", max_rows=1_000_000)
    assert "2,000,000 rows" in str(err)


def test_a_compressed_wrapper_is_not_a_batch(engine: Engine, tmp_path: Path) -> None:
    """Parquet compresses internally; a gzip around it is refused, never inflated."""
    inner = good_file(tmp_path / "b.parquet")
    wrapped = tmp_path / "b.parquet.gz"
    wrapped.write_bytes(gzip.compress(inner.read_bytes()))
    refused(engine, tmp_path, wrapped, "INPUT_CORRUPT")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_file_at_any_length(engine: Engine, tmp_path: Path, keep: float) -> None:
    data = good_file(tmp_path / "good.parquet", 2000).read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: int(len(data) * keep)])
    refused(engine, tmp_path, cut, "INPUT_CORRUPT")


def test_wrong_types_everywhere(engine: Engine, tmp_path: Path) -> None:
    table = taps_table([tap(i) for i in range(5)])
    table = pa.table({n: table.column(n).cast(pa.string()) for n in table.column_names})
    path = tmp_path / "strings.parquet"
    pq.write_table(table.replace_schema_metadata(META), path)
    err = refused(engine, tmp_path, path, "INPUT_SCHEMA")
    assert "operator is string, expected uint16" in str(err)


def test_a_pipe_or_a_directory_is_not_read(engine: Engine, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.parquet"
    os.mkfifo(fifo)  # opening it would block for ever
    refused(engine, tmp_path, fifo, "INPUT_NOT_FILE")
    (tmp_path / "dir.parquet").mkdir()
    refused(engine, tmp_path, tmp_path / "dir.parquet", "INPUT_NOT_FILE")


def test_paths_outside_the_input_directory(engine: Engine, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = good_file(tmp_path / "secret.parquet")
    link = inbox / "innocent.parquet"
    link.symlink_to(outside)
    for path in (outside, inbox / ".." / "secret.parquet", link, Path("/etc/passwd")):
        err = refused(engine, tmp_path, path, "INPUT_OUTSIDE_DIR", input_dir=inbox)
        assert str(inbox.resolve()) in str(err)
    inside = good_file(inbox / "ok.parquet")
    assert ingest_file(engine, tmp_path, inside, REG, input_dir=inbox).accepted == 100
