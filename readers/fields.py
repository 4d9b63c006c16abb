"""Field codecs and the stored-value pipeline of the text formats (NFC, wearable, social-security).

A format is a list of ``Spec``: its field name, a codec saying how the value is written, and
the role it plays (which T-Union field, or which kind of personal data). ``check_fields``
validates every field in that order, one array expression per check; ``stored_value_taps``
then rebuilds each record's TAC block, verifies the TAC with the issuer's key, tokenises the
card number and returns the canonical taps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clearing.taps import TapType
from readers.columns import (
    RowChecks,
    code_of,
    compact_time_ms,
    digits,
    echo,
    fixed_bytes,
    local_time_ms,
    matches,
    taps_from_columns,
)
from readers.config import ReaderConfig
from readers.tokenise import card_ids_fixed, field_token, token_hex
from readers.tunion import MAX_TS_MS, MAX_VALUE, build_blocks, check_tacs, txn_of_tap_type
from tariffs.error_codes import ErrorCode
from tariffs.vocab import Product

TAP_NAMES = tuple(t.name.lower() for t in TapType)  # "flat", "entry", "exit" = 0, 1, 2
PRODUCT_NAMES = tuple(p.name.lower() for p in Product)  # "ordinary", "student", ...

# codecs: how a value is written
INT = "int"  # a JSON integer
DIGITS = "digits"  # 1-18 ASCII digits in a text field
ASN = "asn"  # exactly 20 ASCII digits: a card number (personal data)
SSN = "ssn"  # 17 digits and a digit or X with a valid ISO 7064 MOD 11-2 check (personal data)
HEX8 = "hex8"  # 8 hex digits: a TAC
EPOCH_MS = "epoch_ms"  # a JSON integer of UTC milliseconds
ISO_MS = "iso_ms"  # YYYY-MM-DDThh:mm:ss.fff+hh:mm
COMPACT_MS = "compact_ms"  # YYYYMMDDhhmmssfff, China Standard Time
TOKEN = "token"  # 1-64 visible ASCII characters: an account token (personal data)
TEXT = "text"  # 1-64 characters without control characters, never echoed (free text)
TAP_NAME = "tap_name"  # flat | entry | exit
PRODUCT_NAME = "product_name"  # ordinary | student | senior | disabled | other
NAME = "name"  # one of the spec's own ``names`` (a device kind, ...)

PERSONAL = frozenset({ASN, SSN, TOKEN})


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # the field's name in the format
    codec: str
    role: str  # the T-Union field it fills ("issuer", "asn", "ts_ms", ...) or a free label
    names: tuple[str, ...] = ()  # for a closed vocabulary of the format's own (device kind)


_ISO_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}[+-][0-9]{2}:[0-9]{2}"
)
_ISO7064_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ISO7064_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)


@dataclass
class Checked:
    """The values of validated fields by role, and per field whether its value was valid."""

    values: dict[str, np.ndarray]
    blocks: dict[str, np.ndarray]  # fixed-width ASCII of asn / tac / ssn by role
    strs: dict[str, pa.Array]  # personal tokens and free text, by role
    valid: dict[str, np.ndarray]  # by field name


def check_fields(
    specs: Sequence[Spec],
    n: int,
    ints: dict[str, np.ndarray],
    strs: dict[str, pa.Array],
    usable: dict[str, np.ndarray],
    checks: RowChecks,
) -> Checked:
    """Validate each field in ``specs`` order; record failures in ``checks`` (first one wins)."""
    out = Checked({}, {}, {}, {})
    for s in specs:
        use = usable[s.name]
        ok = use.copy()

        def bad(
            mask: np.ndarray, code: ErrorCode, message: str, s: Spec = s,
            use: np.ndarray = use
        ) -> None:
            checks.flag(mask & use, code, s.name, message)

        if s.codec in (INT, EPOCH_MS, DIGITS):
            if s.codec == DIGITS:
                fmt = matches(strs[s.name], "[0-9]{1,18}")
                bad(~fmt, ErrorCode.FIELD_FORMAT, f"{s.name} must be 1 to 18 digits")
                ok &= fmt
                text = pc.if_else(pa.array(ok), strs[s.name], "0").fill_null("0")
                v = np.asarray(text.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
            else:
                v = ints[s.name]
            hi = MAX_TS_MS if s.codec == EPOCH_MS else MAX_VALUE.get(s.role, 2**63 - 1)
            rng = (v >= 0) & (v <= hi)
            bad(ok & ~rng, ErrorCode.FIELD_RANGE, f"{s.name} must be between 0 and {hi}")
            ok &= rng
            out.values["ts_ms" if s.codec == EPOCH_MS else s.role] = np.where(ok, v, 0)
        elif s.codec in (ASN, HEX8, SSN):
            width, pattern = {
                ASN: (20, "[0-9]{20}"),
                HEX8: (8, "[0-9A-Fa-f]{8}"),
                SSN: (18, "[0-9]{17}[0-9X]"),
            }[s.codec]
            fmt = matches(strs[s.name], pattern)
            what = {ASN: "20 digits", HEX8: "8 hex digits", SSN: "17 digits and a check digit or X"}
            bad(~fmt, ErrorCode.FIELD_FORMAT, f"{s.name} must be {what[s.codec]}")
            ok &= fmt
            block = fixed_bytes(strs[s.name], width, ok)
            if s.codec == SSN:
                good = ssn_check_ok(block)
                bad(ok & ~good, ErrorCode.SS_NUMBER_INVALID, f"{s.name} fails its check character")
                ok &= good
            out.blocks[s.role] = block
        elif s.codec in (TAP_NAME, PRODUCT_NAME, NAME):
            names = {TAP_NAME: TAP_NAMES, PRODUCT_NAME: PRODUCT_NAMES}.get(s.codec, s.names)
            code = code_of(strs[s.name], names)
            bad(code < 0, ErrorCode.VALUE_UNKNOWN, f"{s.name} must be one of: {', '.join(names)}")
            ok &= code >= 0
            out.values[s.role] = np.maximum(code, 0)
        elif s.codec in (ISO_MS, COMPACT_MS):
            if s.codec == ISO_MS:
                fmt = matches(strs[s.name], _ISO_PATTERN)
                bad(~fmt, ErrorCode.FIELD_FORMAT, f"{s.name} must be YYYY-MM-DDThh:mm:ss.fff+hh:mm")
                ts, real = iso_ms(fixed_bytes(strs[s.name], 29, ok & fmt))
            else:
                fmt = matches(strs[s.name], "[0-9]{17}")
                bad(~fmt, ErrorCode.FIELD_FORMAT, f"{s.name} must be 17 digits YYYYMMDDhhmmssfff")
                ts, _, real = compact_time_ms(fixed_bytes(strs[s.name], 17, ok & fmt))
            ok &= fmt
            real &= (ts >= 0) & (ts <= MAX_TS_MS)
            bad(ok & ~real, ErrorCode.TIME_INVALID, f"{s.name} names no real time (1970-9999)")
            ok &= real
            out.values["ts_ms"] = np.where(ok, ts, 0)
        elif s.codec in (TOKEN, TEXT):
            pattern = "[!-~]{1,64}" if s.codec == TOKEN else "[^\\x00-\\x1f\\x7f]{1,64}"
            fmt = matches(strs[s.name], pattern)
            bad(
                ~fmt,
                ErrorCode.FIELD_FORMAT,
                f"{s.name} must be 1 to 64 characters"
                + (" without spaces" if s.codec == TOKEN else ""),
            )
            ok &= fmt
            out.strs[s.role] = strs[s.name]
        else:
            raise ValueError(f"unknown codec {s.codec!r}")
        out.valid[s.name] = ok
    return out


def ssn_check_ok(block: np.ndarray) -> np.ndarray:
    """GB 11643 / ISO 7064 MOD 11-2: the 18th character is fixed by the first 17 digits."""
    total = (block[:, :17].astype(np.int64) - 48) @ _ISO7064_WEIGHTS
    ok: np.ndarray = block[:, 17] == _ISO7064_CHECK[total % 11]
    return ok


def iso_ms(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC ms of ``YYYY-MM-DDThh:mm:ss.fff±hh:mm`` rows (n, 29) and whether each is real."""

    def num(a: int, b: int) -> np.ndarray:
        return digits(block[:, a:b])[0]

    sign = np.where(block[:, 23] == ord("-"), -1, 1)
    off_h, off_m = num(24, 26), num(27, 29)
    offset = sign * (off_h * 60 + off_m) * 60_000
    ms, real = local_time_ms(
        num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19), num(20, 23), offset
    )
    return ms, real & (off_h <= 14) & (off_m <= 59)


def stored_value_taps(
    checked: Checked,
    checks: RowChecks,
    media: int,
    config: ReaderConfig,
    key: bytes,
    tac_field: str,
) -> tuple[pa.Table, np.ndarray]:
    """Verify TACs of the rows still valid, tokenise their cards, and build their canonical taps.

    Returns the taps and the mask of rows that became taps.
    """
    v = checked.values
    n = checks.n
    live = np.flatnonzero(checks.ok)
    txn, direction = txn_of_tap_type(v["tap"])
    cols = {
        "form": np.full(n, media, dtype=np.int64),
        "issuer": v["issuer"],
        "card_seq": v["card_seq"],
        "txn_type": txn,
        "direction": direction,
        "product": v["product"],
        "amount": v["amount"],
        "balance": v["balance"],
        "operator": v["operator"],
        "terminal_id": v["terminal_id"],
        "terminal_seq": v["terminal_seq"],
        "ts_ms": v["ts_ms"],
        "city": v["city"],
        "line": v["line"],
        "stop": v["stop"],
    }
    sub = {k: a[live] for k, a in cols.items()}
    blocks = build_blocks(sub, checked.blocks["asn"][live])
    no_key, forged = check_tacs(blocks, sub["issuer"], checked.blocks["tac"][live], config)
    for mask, code, msg in (
        (no_key, ErrorCode.TAC_KEY_UNKNOWN, "no TAC key is configured for this issuer"),
        (forged, ErrorCode.TAC_INVALID, "the TAC does not authenticate this record"),
    ):
        full = np.zeros(n, dtype=bool)
        full[live] = mask
        checks.flag(full, code, tac_field, msg)
    keep = checks.ok
    card_id = card_ids_fixed(key, v["issuer"][keep], checked.blocks["asn"][keep])
    canonical = {
        "operator": cols["operator"][keep],
        "device_id": cols["terminal_id"][keep],
        "device_seq": cols["terminal_seq"][keep],
        "card_id": card_id,
        "card_seq": cols["card_seq"][keep],
        "issuer": cols["issuer"][keep],
        "product": cols["product"][keep],
        "media": cols["form"][keep],
        "ts_ms": cols["ts_ms"][keep],
        "city": cols["city"][keep],
        "line": cols["line"][keep],
        "stop": cols["stop"][keep],
        "tap_type": v["tap"][keep],
        "debited_fen": cols["amount"][keep],
        "balance_fen": cols["balance"][keep],  # SPEC v1.2 §3: for risk signals only
    }
    return taps_from_columns(canonical, np.ones(int(keep.sum()), dtype=bool)), keep


def error_record(
    specs: Sequence[Spec],
    raw: dict[str, Any] | None,
    valid: dict[str, bool],
    key: bytes,
) -> dict[str, object]:
    """A rejected record fit for quarantine: personal values as keyed tokens, free text dropped,
    invalid values echoed only when too short to be a personal number (``columns.echo``)."""
    if raw is None:
        return {}
    out: dict[str, object] = {}
    issuer = next((raw.get(s.name) for s in specs if s.role == "issuer"), None)
    for s in specs:
        value = raw.get(s.name)
        if s.codec == TEXT or value is None:
            continue
        if s.codec == ASN:
            out["card_token"] = token_hex(
                key,
                str(issuer).encode("utf-8", "backslashreplace")
                + b":"
                + str(value).encode("utf-8", "surrogatepass"),
            )
        elif s.codec in PERSONAL:
            out[f"{s.name}_token"] = field_token(key, s.name, str(value))
        else:
            ok = valid.get(s.name, False) and isinstance(value, int | str)
            out[s.name] = echo(value if isinstance(value, int | str) else type(value).__name__, ok)
    return out
