"""The shared shape of the JSON Lines stored-value formats (phone NFC, wearables).

Both are exports of a platform that relays a virtual card's purse transactions: one JSON
object per line, fields named by the platform, each debit authenticated by the same TAC as a
physical card's (``readers.tunion``). A subclass names its fields (``specs``) and its medium;
``tongka.testing.raw_writers`` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from readers.base import ParseResult, parse_file, result
from readers.columns import RowChecks, split_lines
from readers.config import ReaderConfig
from readers.fields import EPOCH_MS, INT, Spec, check_fields, error_record, stored_value_taps
from readers.jsonl import INT as JSON_INT
from readers.jsonl import STR as JSON_STR
from readers.jsonl import JsonField, load_object, read_json_lines
from tariffs.vocab import Media


def json_fields(specs: Sequence[Spec]) -> list[JsonField]:
    return [JsonField(s.name, JSON_INT if s.codec in (INT, EPOCH_MS) else JSON_STR) for s in specs]


def first_object(head: bytes) -> dict[str, Any] | None:
    """The first non-empty line of a file's head as a JSON object, if it is one."""
    for line in head.split(b"\n"):
        line = line.strip()
        if line:
            return load_object(line)
    return None


class JsonStoredValueAdapter:
    """A JSON Lines stored-value format; subclasses set the class attributes."""

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

        def record(i: int) -> dict[str, object]:
            valid = {name: bool(mask[i]) for name, mask in checked.valid.items()}
            return error_record(self.specs, load_object(lines.raw(i)), valid, key)

        return result(taps, checks.errors(lines, record), n, lines.rows[keep], lines)
