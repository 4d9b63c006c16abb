"""Tariff loading errors: each names the file, the version, the field path and what is wrong."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TariffProblem:
    """One thing wrong in a tariff or contract file, in words an operator can act on."""

    code: str  # stable, e.g. TARIFF_UNKNOWN_LINE
    file: str
    version: str  # the version's valid_from, or "-" for file-level problems
    field: str  # dotted path, e.g. versions[1].line_fares[0].lines[2]
    message: str

    def __str__(self) -> str:
        return f"{self.file}: version {self.version}: {self.field}: {self.message} [{self.code}]"


class TariffError(Exception):
    """A tariff set that must not be used; carries every problem found, not just the first."""

    code = "TARIFF_INVALID"

    def __init__(self, problems: list[TariffProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
