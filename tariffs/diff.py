"""What changed between two sets of tariffs, per area, version and field, for finance to sign off.

Lists of rules are matched by what they are about (a price by its mode and product, a line
fare by its operator and lines, a network by its id, ...), not by position, so reordering a
file changes nothing and a changed fare reads as one change of one field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tariffs.model import ContractBook, Tariff

ABSENT = "—"  # the old or new side of an added or removed item

# How the items of each list are keyed; lists not named here are compared as wholes.
LIST_KEYS: dict[str, tuple[str, ...]] = {
    "line_fares": ("operator", "lines"),
    "networks": ("network",),
    "prices": ("mode", "product"),
    "caps": ("product",),
    "rebates": ("network", "valid_from"),
}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference; ``old`` or ``new`` is ABSENT for a side where the item is missing."""

    area: str  # the area code, or "contracts"
    version: str  # valid_from of the version, or "-" for the file's own fields
    field: str  # e.g. prices[bus, ordinary].rate_bp
    old: str
    new: str


def diff_tariffs(old: Mapping[int, Tariff], new: Mapping[int, Tariff]) -> list[Change]:
    """Every difference between two {area: tariff} maps, ordered by area, version and field."""
    changes: list[Change] = []
    for area in sorted(set(old) | set(new)):
        a, b = old.get(area), new.get(area)
        if a is None or b is None:
            present = b if a is None else a
            assert present is not None
            what = f"{present.name}, {len(present.versions)} version(s)"
            changes.append(Change(str(area), "-", "tariff", ABSENT if a is None else what,
                                  what if a is None else ABSENT))
            continue
        for name in ("name", "illustrative"):
            if getattr(a, name) != getattr(b, name):
                changes.append(Change(str(area), "-", name, _show(getattr(a, name)),
                                      _show(getattr(b, name))))
        olds = {str(v.valid_from): v.model_dump() for v in a.versions}
        news = {str(v.valid_from): v.model_dump() for v in b.versions}
        for day in sorted(set(olds) | set(news)):
            if day not in news:
                changes.append(Change(str(area), day, "version", "in force from " + day, ABSENT))
            elif day not in olds:
                changes.append(Change(str(area), day, "version", ABSENT, "in force from " + day))
            else:
                changes.extend(Change(str(area), day, path, o, n)
                               for path, o, n in _diff_values("", olds[day], news[day]))
    return changes


def diff_contracts(old: ContractBook, new: ContractBook) -> list[Change]:
    """Differences of the fee rate of each (operator, issuer) pair; no contract means 0 bp."""
    def rates(book: ContractBook) -> dict[tuple[int, int], int]:
        return {(c.operator, i): c.fee_bp for c in book.contracts for i in c.issuers}

    a, b = rates(old), rates(new)
    return [Change("contracts", "-", f"operator {op} issuer {issuer}.fee_bp",
                   _show(a[(op, issuer)]) if (op, issuer) in a else ABSENT,
                   _show(b[(op, issuer)]) if (op, issuer) in b else ABSENT)
            for op, issuer in sorted(set(a) | set(b)) if a.get((op, issuer)) != b.get((op, issuer))]


def _diff_values(path: str, a: Any, b: Any) -> list[tuple[str, str, str]]:
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append((sub, _show(a[key]) if key in a else ABSENT,
                            _show(b[key]) if key in b else ABSENT))
            else:
                out.extend(_diff_values(sub, a[key], b[key]))
        return out
    name = path.rsplit(".", 1)[-1]
    if isinstance(a, list) and isinstance(b, list) and name in LIST_KEYS:
        keyed_a = {_item_key(name, x): x for x in a}
        keyed_b = {_item_key(name, x): x for x in b}
        out = []
        for key in sorted(set(keyed_a) | set(keyed_b)):
            sub = f"{path}[{key}]"
            if key not in keyed_a or key not in keyed_b:
                out.append((sub, _show(keyed_a[key]) if key in keyed_a else ABSENT,
                            _show(keyed_b[key]) if key in keyed_b else ABSENT))
            else:
                out.extend(_diff_values(sub, keyed_a[key], keyed_b[key]))
        return out
    return [(path, _show(a), _show(b))]


def _item_key(list_name: str, item: dict[str, Any]) -> str:
    parts = []
    for field in LIST_KEYS[list_name]:
        value = item.get(field)
        parts.append("all" if value is None else
                     " ".join(map(str, value)) if isinstance(value, list) else str(value))
    return ", ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()
                               if v not in (None, "", [], {})) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
