"""Same card, same discount, whatever the medium: a Wuhan Tong card of each of the six media,
read from its own raw format, pays on a Huangshi bus exactly what a Huangshi card pays
(SPEC §6.3)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from clearing.reference import match_and_price
from clearing.service_day import local_ms
from clearing.taps import ACCOUNT_BASED, TapType, taps_table
from readers.config import ReaderConfig
from readers.registry import detect_format, get_adapter
from tariffs.load import load_tariff_set
from tariffs.vocab import Media, Product
from tongka.testing.synth import write_raw

DAY = dt.date(2026, 11, 24)
HUANGSHI_BUS = 201
WUHAN_TONG, HUANGSHI_TONG = 1, 2
CONFIG = ReaderConfig.demo()


def _rides(issuer: int, media: int, product: int, card: int) -> list[dict]:
    """Two Huangshi bus boardings 20 minutes apart on two lines, then one two hours later."""
    reg = load_tariff_set().registry
    lines = [reg.lines[(HUANGSHI_BUS, n)] for n in (1, 2, 3)]
    stored = media != Media.QR_CODE
    rows = []
    for k, (ln, (hh, mm)) in enumerate(zip(lines, [(8, 0), (8, 20), (10, 30)], strict=True)):
        stop = ln.stops[k + 1]
        rows.append(
            {
                "operator": HUANGSHI_BUS,
                "device_id": ln.line * 1000 + card,
                "device_seq": 7000 + k + 10 * card,
                "card_id": 10_000 + card,
                "card_seq": 300 + k,
                "issuer": issuer,
                "product": product,
                "media": media,
                "ts_ms": local_ms(DAY, hh, mm),
                "city": reg.stops[stop].city,
                "line": ln.line,
                "stop": stop,
                "tap_type": int(TapType.FLAT),
                "debited_fen": 160 if stored else ACCOUNT_BASED,
            }
        )
    return rows


def _priced(taps: pa.Table, tmp_path: Path) -> pa.Table:
    """Write the taps in their raw formats, read them back, and price what was read."""
    parsed = []
    for p in write_raw(taps, "all", tmp_path, CONFIG):
        r = get_adapter(detect_format(p)).parse(p, CONFIG)
        assert r.errors == []
        parsed.append(r.taps)
    back = pa.concat_tables(parsed)
    assert back.num_rows == taps.num_rows
    return match_and_price(back, load_tariff_set())


def _fares(legs: pa.Table, issuer: int, media: int) -> list[tuple[int, ...]]:
    rows = [r for r in legs.to_pylist() if r["issuer"] == issuer and r["media"] == media]
    rows.sort(key=lambda r: r["board_ts_ms"])
    assert len(rows) == 3
    return [
        (
            r["honoured_product"],
            r["base_fen"],
            r["product_fare_fen"],
            r["transfer_fare_fen"],
            r["computed_fen"],
            r["card_discount_fen"],
            r["transfer_discount_fen"],
            r["cap_discount_fen"],
        )
        for r in rows
    ]


@pytest.mark.parametrize("product", [Product.ORDINARY, Product.STUDENT, Product.SENIOR])
def test_wuhan_tong_of_every_medium_pays_the_huangshi_fare(
    product: Product, tmp_path: Path
) -> None:
    rows = _rides(HUANGSHI_TONG, int(Media.CARD), int(Product.ORDINARY), card=0)
    if (
        product != Product.ORDINARY
    ):  # a Huangshi card of the product, to show the concession is local
        rows += _rides(HUANGSHI_TONG, int(Media.SHAPED_CARD), int(product), card=1)
    for m in Media:
        rows += _rides(WUHAN_TONG, int(m), int(product), card=10 + int(m))
    legs = _priced(taps_table(rows), tmp_path)
    huangshi = _fares(legs, HUANGSHI_TONG, int(Media.CARD))
    assert [f[4] for f in huangshi] == [160, 160, 160]  # Huangshi's card fare: 1.60 yuan
    for m in Media:
        # SPEC §6.2: concessions are Huangshi's own: a Wuhan Tong student or senior is honoured
        # as ORDINARY there, and then pays exactly the Huangshi ordinary card fare.
        assert _fares(legs, WUHAN_TONG, int(m)) == huangshi, Media(m).name
    if product != Product.ORDINARY:
        local = _fares(legs, HUANGSHI_TONG, int(Media.SHAPED_CARD))
        assert local[0][0] == product and local[0][4] < 160  # the local concession does apply
