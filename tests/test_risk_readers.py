"""SPEC v1.2 §3 balance_fen from the raw formats: carried from every format whose records hold
the purse balance (card, NFC, wearable, social-security), -1 for QR (account-based)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clearing.taps import FULL_TAP_SCHEMA, TAP_SCHEMA, with_optional_columns
from readers.config import ReaderConfig
from readers.registry import detect_format, get_adapter
from tongka.testing.synth import sample_taps, write_raw

CONFIG = ReaderConfig.demo()
DAY = dt.date(2026, 11, 24)
WITH_BALANCE = ("card", "nfc", "wearable", "ssc")


def _taps_with_balances(fmt: str, n: int = 300) -> pa.Table:
    media = tuple(int(m) for m in get_adapter(fmt).media)
    taps = sample_taps(n, seed=5, media=media, day=DAY)
    bal = np.arange(n, dtype=np.int64) * 7 + 11  # distinct: a mix-up would show
    return with_optional_columns(taps).set_column(
        len(TAP_SCHEMA), FULL_TAP_SCHEMA.field("balance_fen"), pa.array(bal, pa.int64()))


def _key(t: pa.Table) -> list[tuple[int, int, int]]:
    return list(zip(t.column("operator").to_pylist(), t.column("device_id").to_pylist(),
                    t.column("device_seq").to_pylist(), strict=True))


@pytest.mark.parametrize("fmt", WITH_BALANCE)
def test_formats_with_a_purse_carry_its_balance(fmt: str, tmp_path: Path) -> None:
    taps = _taps_with_balances(fmt)
    want = dict(zip(_key(taps), taps.column("balance_fen").to_pylist(), strict=True))
    got: dict[tuple[int, int, int], int] = {}
    for path in write_raw(taps, fmt, tmp_path, CONFIG):
        r = get_adapter(detect_format(path)).parse(path, CONFIG)
        assert r.taps.schema == TAP_SCHEMA  # pricing's view is unchanged
        assert r.balances is not None and len(r.balances) == r.taps.num_rows
        with_rows = r.taps_with_source_rows()
        assert with_rows.column("balance_fen").to_pylist() == r.balances.tolist()
        got.update(zip(_key(r.taps), r.balances.tolist(), strict=True))
    assert got and all(got[k] == want[k] for k in got)


def test_qr_codes_have_no_balance(tmp_path: Path) -> None:
    taps = _taps_with_balances("qr")
    for path in write_raw(taps, "qr", tmp_path, CONFIG):
        r = get_adapter(detect_format(path)).parse(path, CONFIG)
        assert r.balances is None
        assert "balance_fen" not in r.taps_with_source_rows().column_names  # reads as -1
