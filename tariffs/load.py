"""Load and validate tariff and contract files into a ``TariffSet`` (SPEC §6).

Every problem names file, version and field (``tariffs.errors``); a set with any problem is
refused whole, so a half-valid tariff can never price a day.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from tariffs.error_codes import ErrorCode
from tariffs.errors import TariffError, TariffProblem
from tariffs.fares import rebate_rule
from tariffs.model import ContractBook, MonthlyRebate, Tariff, TariffVersion
from tariffs.registry import Registry, load_registry
from tariffs.rules import version_in_force
from tariffs.validate import check_contracts, check_tariff, describe_field_error

DEFAULT_TARIFF_DIR = Path(__file__).resolve().parent / "data" / "tariffs"
CONTRACTS_FILE = "contracts.toml"
M = TypeVar("M", Tariff, ContractBook)


@dataclass(frozen=True, eq=False)
class TariffSet:
    """Every area's tariff and the fee contracts, checked against one registry.

    Compared and hashed by identity: a loaded set is one immutable value that pricing caches
    key on.
    """

    registry: Registry
    tariffs: dict[int, Tariff]  # by area
    contracts: ContractBook

    def version_for(self, area: int, day: dt.date) -> TariffVersion:
        """SPEC §6: the version in force prices the whole service day of its area.

        The rule is ``tariffs.rules.version_in_force``, the one the kernels apply to the compiled
        ``version_valid_from`` (here over the versions' first days as date ordinals)."""
        versions = self.tariffs[area].versions
        v = version_in_force([x.valid_from.toordinal() for x in versions], 0, len(versions),
                             day.toordinal())
        if v < 0:
            raise LookupError(f"no tariff version of area {area} is in force on {day}")
        return versions[v]

    def rebates_in_force(self, day: dt.date) -> dict[int, tuple[TariffVersion, MonthlyRebate]]:
        """SPEC §6 (v1.2): by network, the rebate rule in force on ``day`` and the tariff version
        in force then that holds it (whose accepted issuers the rebate is paid to). A network
        with no rule in force that day is absent: it pays no rebate."""
        rules: dict[int, tuple[TariffVersion, MonthlyRebate]] = {}
        for area in sorted(self.tariffs):
            try:
                version = self.version_for(area, day)
            except LookupError:
                continue
            for network in sorted({r.network for r in version.rebates}):
                rule = rebate_rule(version, network, day)
                if rule is not None:
                    rules[network] = (version, rule)
        return rules

    def fee_bp(self, operator: int, issuer: int) -> int:
        """SPEC §8: the operator's contract rate for that issuer; no contract means 0."""
        for c in self.contracts.contracts:
            if c.operator == operator and issuer in c.issuers:
                return c.fee_bp
        return 0


def load_tariff_set(directory: Path | None = None, registry: Registry | None = None) -> TariffSet:
    """Read every ``*.toml`` of a tariff directory; the default set is cached per process."""
    if directory is None and registry is None:
        return _default_set()
    return _read_set(Path(directory or DEFAULT_TARIFF_DIR), registry or load_registry())


@cache
def _default_set() -> TariffSet:
    return _read_set(DEFAULT_TARIFF_DIR, load_registry())


def _read_set(directory: Path, registry: Registry) -> TariffSet:
    problems: list[TariffProblem] = []
    tariffs: dict[int, Tariff] = {}
    contracts = ContractBook(contracts=[])
    if not directory.is_dir():
        raise TariffError([TariffProblem(ErrorCode.TARIFF_NO_DIRECTORY, str(directory), "-", "-",
                                         "is not a directory of tariff files")])
    for path in sorted(directory.glob("*.toml")):
        if path.name == CONTRACTS_FILE:
            book = _parse(path, ContractBook, problems)
            if book is not None:
                contracts = book
                problems.extend(_check_contracts(path.name, book, registry))
            continue
        tariff = _parse(path, Tariff, problems)
        if tariff is None:
            continue
        if tariff.area in tariffs:
            problems.append(TariffProblem(ErrorCode.TARIFF_DUPLICATE_AREA, path.name, "-", "area",
                                          f"area {tariff.area} already has a tariff file"))
            continue
        problems.extend(check_tariff(path.name, tariff, registry))
        tariffs[tariff.area] = tariff
    for city in registry.cities:
        if city not in tariffs and not problems:
            problems.append(TariffProblem(ErrorCode.TARIFF_MISSING_AREA, str(directory), "-", "-",
                                          f"no tariff file for city {city}"))
    if problems:
        raise TariffError(problems)
    return TariffSet(registry, tariffs, contracts)


def load_tariff_file(path: Path, registry: Registry | None = None) -> Tariff:
    """Parse and check one tariff file; raises ``TariffError`` listing every problem."""
    problems: list[TariffProblem] = []
    tariff = _parse(path, Tariff, problems)
    if tariff is not None:
        problems.extend(check_tariff(path.name, tariff, registry or load_registry()))
    if problems or tariff is None:
        raise TariffError(problems)
    return tariff


def _parse(path: Path, model: type[M], problems: list[TariffProblem]) -> M | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(TariffProblem(ErrorCode.TARIFF_UNREADABLE, path.name, "-", "-", str(exc)))
        return None
    except tomllib.TOMLDecodeError as exc:
        problems.append(TariffProblem(ErrorCode.TARIFF_SYNTAX, path.name, "-", "-",
                                      f"is not valid TOML: {exc}"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = err["loc"]
            version = "-"
            if len(loc) >= 2 and loc[0] == "versions" and isinstance(loc[1], int):
                raw = data.get("versions", [])
                if loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
                    version = str(raw[loc[1]].get("valid_from", f"#{loc[1] + 1}"))
            code, message = describe_field_error(dict(err))
            problems.append(TariffProblem(code, path.name, version, _path(loc), message))
        return None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "-"


def _check_contracts(file: str, book: ContractBook, registry: Registry) -> list[TariffProblem]:
    problems = []
    for i, c in enumerate(book.contracts):
        if c.operator not in registry.operators:
            problems.append(TariffProblem(ErrorCode.TARIFF_UNKNOWN_OPERATOR, file, "-",
                                          f"contracts[{i}].operator",
                                          f"operator {c.operator} is not in the registry"))
        for j, issuer in enumerate(c.issuers):
            if issuer not in registry.issuers:
                problems.append(TariffProblem(ErrorCode.TARIFF_UNKNOWN_ISSUER, file, "-",
                                              f"contracts[{i}].issuers[{j}]",
                                              f"issuer {issuer} is not in the registry"))
    problems.extend(check_contracts(file, book, registry))
    return problems
