"""A generated day (tongka.testing.generate) written in the raw formats reads back as the same day:
every tap a format can express comes back, corrupt rows included, and nothing else."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clearing.taps import TAP_COLUMNS
from readers.config import ReaderConfig, ReaderConfigError
from readers.registry import detect_format, get_adapter
from tariffs.error_codes import ErrorCode
from tariffs.load import load_tariff_set
from tariffs.vocab import Media, Product
from tongka.testing.generate import generate
from tongka.testing.synth import write_raw

DAY = dt.date(2026, 11, 24)
CONFIG = ReaderConfig.demo()


def _key(t: pa.Table) -> list[tuple]:
    cols = [c for c in TAP_COLUMNS if c != "card_id"]
    return sorted(zip(*(t.column(c).to_pylist() for c in cols), strict=True))


def test_generated_day_round_trips_through_every_format(tmp_path: Path) -> None:
    day = generate(DAY, 4000, 9, load_tariff_set())
    taps = day.table
    paths = write_raw(taps, "all", tmp_path, CONFIG)
    parsed, errors = [], []
    for p in paths:
        r = get_adapter(detect_format(p)).parse(p, CONFIG)
        parsed.append(r.taps)
        errors += r.errors
        assert r.rows == r.taps.num_rows + len(r.errors)
    back = pa.concat_tables(parsed)
    # what cannot be written: media outside the enum, tap types outside 0-2, negative debits
    # other than a QR code's -1, and (wearables name products) products outside the enum
    media = taps["media"].to_numpy()
    named = (media != Media.WEARABLE) | (taps["product"].to_numpy() <= max(Product))
    tap_type = taps["tap_type"].to_numpy()
    debit = taps["debited_fen"].to_numpy()
    qr = media == Media.QR_CODE
    expressible = (media <= max(Media)) & (tap_type <= 2) & np.where(qr, debit == -1, debit >= 0)
    expressible &= named
    # the generator's unknown issuer (999) has no TAC or QR key: quarantined by the adapter
    keyless = taps["issuer"].to_numpy() == 999
    assert {e.code for e in errors} <= {ErrorCode.TAC_KEY_UNKNOWN, ErrorCode.QR_UNKNOWN_KEY}
    assert len(errors) == int((expressible & keyless).sum())
    assert _key(back) == _key(taps.filter(pa.array(expressible & ~keyless)))
    assert expressible.mean() > 0.95


def test_writing_raw_files_needs_keys(tmp_path: Path) -> None:
    bare = ReaderConfig.model_construct(
        pii_key=None,
        tac_keys={},
        qr_public_keys={},
        qr_signing_keys={},
        qr_clock_skew_ms=60_000,
        demo_keys=False,
    )
    with pytest.raises(ReaderConfigError, match="TONGKA_DEMO_KEYS"):
        write_raw(generate(DAY, 100, 1, load_tariff_set()).table, "card", tmp_path, bare)
