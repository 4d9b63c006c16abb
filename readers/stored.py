"""The shared shape of the JSON Lines stored-value formats (phone NFC, wearables).

Both are exports of a platform that relays a virtual card's purse transactions: one JSON
object per line, fields named by the platform, each debit authenticated by the same TAC as a
physical card's (``readers.tunion``). A subclass names its fields (``specs``), its medium and
how it writes one record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from readers.base import ParseResult, parse_file, result
from readers.columns import RowChecks, split_lines
from readers.config import ReaderConfig
from readers.fields import EPOCH_MS, INT, Spec, check_fields, error_record, stored_value_taps
from readers.jsonl import INT as JSON_INT
from readers.jsonl import STR as JSON_STR
from readers.jsonl import JsonField, load_object, read_json_lines
from readers.tunion import (
    stored_value_columns,
    stored_value_writable,
    tac_texts,
)
from tariffs.vocab import Media

if TYPE_CHECKING:
    from readers.identities import Identities


def json_fields(specs: Sequence[Spec]) -> list[JsonField]:
    return [JsonField(s.name, JSON_INT if s.codec in (INT, EPOCH_MS) else JSON_STR) for s in specs]


def first_object(head: bytes) -> dict | None:
    """The first non-empty line of a file's head as a JSON object, if it is one."""
    for line in head.split(b"\n"):
        line = line.strip()
        if line:
            return load_object(line)
    return None


class JsonStoredValueAdapter:
    """A JSON Lines stored-value format; subclasses set the class attributes and ``rows``."""

    name: str
    description: str  # one line for listings (``readers.registry.format_descriptions``)
    media: tuple[Media, ...]
    suffix: str = ".jsonl"
    specs: tuple[Spec, ...]
    marker: str  # a key only this format's records have (format detection)
    tac_field: str

    def sniff(self, head: bytes) -> bool:
        obj = first_object(head)
        return obj is not None and self.marker in obj

    def parse(self, path: Path, config: ReaderConfig) -> ParseResult:
        """Read and parse one file (``readers.base.parse_file``)."""
        return parse_file(self, path, config)

    def parse_bytes(self, data: bytes, config: ReaderConfig, *, name: str = "") -> ParseResult:
        key = config.pii_key_bytes()
        lines = split_lines(data)
        n = len(lines)
        checks = RowChecks(n)
        cols = read_json_lines(lines, json_fields(self.specs), checks)
        checked = check_fields(self.specs, n, cols.ints, cols.strs, cols.usable, checks)
        taps, keep = stored_value_taps(
            checked, checks, int(self.media[0]), config, key, self.tac_field
        )

        def record(i: int) -> dict:
            valid = {name: bool(mask[i]) for name, mask in checked.valid.items()}
            return error_record(self.specs, load_object(lines.raw(i)), valid, key)

        return result(taps, checks.errors(lines, record), n, lines.rows[keep], lines)

    # -- writing (tongka.testing.synth) ------------------------------------------------------------

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        return stored_value_writable(taps)

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        cols = stored_value_columns(taps, ids.balance)
        tac_text = tac_texts(cols, ids.asn, config)
        asn_text = ids.asn.tobytes().decode("ascii")
        out = []
        for i, row in enumerate(self.rows(taps, ids, cols)):
            row[self.tac_field] = tac_text[8 * i : 8 * i + 8]
            row[self._asn_field] = asn_text[20 * i : 20 * i + 20]
            out.append(json.dumps(row, separators=(",", ":")))
        return ("\n".join(out) + "\n").encode("utf-8") if out else b""

    @property
    def _asn_field(self) -> str:
        return next(s.name for s in self.specs if s.role == "asn")

    def rows(self, taps: pa.Table, ids: Identities, cols: dict[str, np.ndarray]) -> list[dict]:
        """One JSON object per tap, every field but the card number and the TAC."""
        raise NotImplementedError
