"""Synthetic raw files: a canonical day written back out in each medium's raw export format.

The canonical taps only know a card by its token, so the raw identities are invented here,
deterministically from ``(issuer, card_id)``: a 20-digit ASN, a social-security number, a
wallet account and a QR account token per card. They are synthetic and belong to nobody
(social-security numbers carry 19th-century birth dates, so none can be a living person's).
``tongka.testing.raw_writers`` writes each format's bytes. Parsing a written file gives back the
same taps, each card under a new, consistent ``card_id`` (the HMAC of its invented number),
which is what the round-trip tests check.

``sample_taps`` draws plain valid taps on the registry's lines for tests and benchmarks that
need many rows fast without the day generator's structure.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from clearing.service_day import day_bounds_ms, day_from_number, service_day_number
from clearing.taps import ACCOUNT_BASED, TAP_SCHEMA, TapType, with_optional_columns
from readers.base import most_common
from readers.columns import put_digits
from readers.config import ReaderConfig, ReaderConfigError
from readers.registry import adapter_names, get_adapter
from tariffs.registry import FLAT, Registry, load_registry
from tariffs.vocab import Media
from tongka.testing.raw_writers import WRITERS, Identities, writer_for

log = logging.getLogger(__name__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fixed bijection of uint64 (wrapping arithmetic intended)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _stream(card: np.ndarray, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _mix(card ^ _mix(np.full(len(card), salt, dtype=np.uint64)))


def identities(taps: pa.Table) -> Identities:
    """Deterministic raw identities for the cards of ``taps`` (a function of issuer and card_id)."""
    issuer = taps.column("issuer").to_numpy().astype(np.uint64)
    card = taps.column("card_id").to_numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        who = _mix(card ^ (issuer << np.uint64(48)) ^ _mix(issuer))
    n = len(who)
    asn = np.empty((n, 20), dtype=np.uint8)
    put_digits(asn, 0, 4, (issuer % np.uint64(10_000)).astype(np.int64))
    put_digits(asn, 4, 16, (who % np.uint64(10**16)).astype(np.int64))
    ss = social_security_numbers(_stream(who, 1))
    wallet = _hex_tokens("wa", _stream(who, 2), _stream(who, 3))
    account = _hex_tokens("qa", _stream(who, 4), _stream(who, 5))
    seq = taps.column("card_seq").to_numpy().astype(np.uint64)
    balance = (_stream(who ^ seq, 6) % np.uint64(200_000)).astype(np.int64)
    if "balance_fen" in taps.column_names:  # a tap's own balance, where it has one (SPEC §3)
        given = np.asarray(taps.column("balance_fen").to_numpy(), dtype=np.int64)
        balance = np.where(given >= 0, given, balance)
    return Identities(asn, ss, wallet, account, balance)


def _hex_tokens(prefix: str, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return np.array(
        [f"{prefix}{int(a):016x}{int(b) & 0xFFFFFFFF:08x}" for a, b in zip(hi, lo, strict=True)],
        dtype=object,
    )


_ISO7064_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
ISO7064_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)  # GB 11643: check char by sum mod 11


def social_security_numbers(h: np.ndarray) -> np.ndarray:
    """18-character numbers in the GB 11643 layout with a valid ISO 7064 MOD 11-2 check character.

    Region codes are the circle's; birth dates fall in 1850-1899, so no living person has one.
    """
    regions = np.array([420100, 420200, 420700, 420900, 421100, 421200, 429004, 429005, 429006])
    n = len(h)
    out = np.empty((n, 18), dtype=np.uint8)
    h = h.astype(np.uint64)
    put_digits(out, 0, 6, regions[(h % np.uint64(len(regions))).astype(np.int64)])
    put_digits(out, 6, 4, 1850 + ((h >> np.uint64(8)) % np.uint64(50)).astype(np.int64))
    put_digits(out, 10, 2, 1 + ((h >> np.uint64(16)) % np.uint64(12)).astype(np.int64))
    put_digits(out, 12, 2, 1 + ((h >> np.uint64(24)) % np.uint64(28)).astype(np.int64))
    put_digits(out, 14, 3, ((h >> np.uint64(32)) % np.uint64(1000)).astype(np.int64))
    out[:, 17] = ISO7064_CHECK[((out[:, :17].astype(np.int64) - 48) @ _ISO7064_WEIGHTS) % 11]
    return out


def write_raw(taps: pa.Table, fmt: str, out_dir: Path, config: ReaderConfig) -> list[Path]:
    """Write ``taps`` in raw format ``fmt`` (or ``"all"``): one file per operator, in file order.

    Each format writes the taps of the media it carries (``Adapter.media``); taps it cannot
    express (a medium no format carries, a tap type or debit outside the format, a value wider
    than its field) are left out and counted in a log line. Files are named
    ``<format>-<day>-op<operator><suffix>`` and written atomically.
    """
    if not (config.demo_keys or config.tac_keys or config.qr_signing_keys):
        raise ReaderConfigError(
            "synthetic raw files are signed with the issuers' keys: set TONGKA_DEMO_KEYS=1 for "
            "the demo key set, or TONGKA_TAC_KEYS / TONGKA_QR_SIGNING_KEYS"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    taps = (with_optional_columns(taps) if "balance_fen" in taps.column_names
            else taps.select(list(TAP_SCHEMA.names)).cast(TAP_SCHEMA))
    names = [n for n in adapter_names() if n in WRITERS] if fmt == "all" else [fmt]
    ids = identities(taps)
    media = taps.column("media").to_numpy()
    paths: list[Path] = []
    carried = np.zeros(taps.num_rows, dtype=bool)
    for name in names:
        adapter = get_adapter(name)
        writer = writer_for(name)
        mine = np.isin(media, [int(m) for m in adapter.media])
        ok = mine & writer.writable(taps, config)
        carried |= mine
        skipped = int((mine & ~ok).sum())
        if skipped:
            log.info("%s: %d taps not expressible in this format were left out", name, skipped)
        rows = np.flatnonzero(ok)
        operator = taps.column("operator").to_numpy()[rows]
        day_no = most_common(
            service_day_number(taps.column("ts_ms").to_numpy()[rows].astype(np.int64))
        )
        day = "empty" if day_no is None else day_from_number(day_no).isoformat()
        for op in np.unique(operator):
            part = rows[operator == op]
            data = writer.render(taps.take(pa.array(part)), ids.take(part), config)
            path = out_dir / f"{name}-{day}-op{int(op)}{adapter.suffix}"
            _write_atomic(path, data)
            paths.append(path)
    if fmt == "all" and (~carried).any():
        log.info("%d taps of media no format carries were left out", int((~carried).sum()))
    return paths


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Plain valid taps, fast, for tests and benchmarks


def sample_taps(
    n: int,
    *,
    seed: int = 0,
    day: dt.date = dt.date(2026, 11, 24),
    media: tuple[int, ...] | None = None,
    issuers: tuple[int, ...] | None = None,
    registry: Registry | None = None,
    cards: int | None = None,
) -> pa.Table:
    """``n`` valid canonical taps on the registry's lines during ``day`` (vectorised, seeded).

    Flat lines get FLAT taps, network lines ENTRY or EXIT; stored-value media debit 0-300
    fen, QR codes -1. Each card's ``card_seq`` and each reader's ``device_seq`` count up, so no
    two taps share a duplicate key (SPEC §4).
    """
    reg = registry or load_registry()
    rng = np.random.default_rng(seed)
    lines = [ln for ln in reg.lines.values() if ln.stops]
    li = rng.integers(0, len(lines), n)
    op = np.array([ln.operator for ln in lines], dtype=np.int64)[li]
    line = np.array([ln.line for ln in lines], dtype=np.int64)[li]
    net = np.array([ln.network for ln in lines], dtype=np.int64)[li]
    nstops = np.array([len(ln.stops) for ln in lines], dtype=np.int64)[li]
    flat_stops = np.concatenate([np.array(ln.stops, dtype=np.int64) for ln in lines])
    first = np.concatenate([[0], np.cumsum([len(ln.stops) for ln in lines])[:-1]]).astype(np.int64)
    stop = flat_stops[first[li] + (rng.random(n) * nstops).astype(np.int64)]
    stop_city = {s: reg.stops[s].city for s in reg.stops}
    city = np.array([stop_city[int(s)] for s in np.unique(stop)], dtype=np.int64)[
        np.searchsorted(np.unique(stop), stop)
    ]
    tap_type = np.where(net == FLAT, TapType.FLAT, rng.integers(1, 3, n))
    issuer_pool = np.array(issuers or sorted(reg.issuers), dtype=np.int64)
    media_pool = np.array(media or [int(m) for m in Media], dtype=np.int64)
    n_cards = cards or max(1, n // 4)
    card_no = rng.integers(0, n_cards, n)
    card_issuer = issuer_pool[rng.integers(0, len(issuer_pool), n_cards)]
    card_media = media_pool[rng.integers(0, len(media_pool), n_cards)]
    card_product = rng.choice(np.array([0, 0, 0, 0, 1, 2, 3, 4]), n_cards)
    card_id = _mix(np.arange(n_cards, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 32))
    start, end = day_bounds_ms(day)
    ts = np.sort(rng.integers(start, end, n))
    order = np.lexsort((ts, card_no))  # card_seq counts each card's taps in time order
    card_seq = np.empty(n, dtype=np.int64)
    cs = card_no[order]
    new = np.r_[True, cs[1:] != cs[:-1]]
    grp = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    card_seq[order] = 1000 + np.arange(n) - grp
    device_id = (line * 1000 + rng.integers(0, 50, n)).astype(np.int64)
    dkey = op * (1 << 40) + device_id
    dorder = np.lexsort((ts, dkey))
    dk = dkey[dorder]
    dnew = np.r_[True, dk[1:] != dk[:-1]]
    dgrp = np.maximum.accumulate(np.where(dnew, np.arange(n), 0))
    device_seq = np.empty(n, dtype=np.int64)
    device_seq[dorder] = 5_000_000 + np.arange(n) - dgrp
    m = card_media[card_no]
    debit = np.where(m == Media.QR_CODE, ACCOUNT_BASED, rng.integers(0, 301, n))
    cols = {
        "operator": op,
        "device_id": device_id,
        "device_seq": device_seq,
        "card_id": card_id[card_no],
        "card_seq": card_seq,
        "issuer": card_issuer[card_no],
        "product": card_product[card_no],
        "media": m,
        "ts_ms": ts,
        "city": city,
        "line": line,
        "stop": stop,
        "tap_type": tap_type,
        "debited_fen": debit,
    }
    return pa.Table.from_arrays(
        [
            pa.array(np.asarray(cols[f.name]).astype(f.type.to_pandas_dtype()), type=f.type)
            for f in TAP_SCHEMA
        ],
        schema=TAP_SCHEMA,
    )
