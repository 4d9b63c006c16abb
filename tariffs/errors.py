"""The base of every error that stops a command, and the tariff errors.

``TongkaError`` lives here, in the bottom room, so that every room's errors (tariffs included)
are one hierarchy whose codes all come from ``tariffs.error_codes``; ``clearing.errors``
re-exports it beside ``InputError`` and ``StateError``. Tariff problems name the file, the
version, the field path and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from tariffs.error_codes import ErrorCode, Kind, error_code


class TongkaError(Exception):
    """Base of every error that stops a command; ``code`` is stable, ``exit_code`` too.

    The code must be in the error-code table (ValueError otherwise, for a subclass already at
    import), and the exit code is the table's: a class only says which kind of failure it is.
    """

    code: str = ErrorCode.TONGKA_ERROR  # an ErrorCode; typed str so subclasses may name one

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            cls.code = error_code(cls.__dict__["code"], command=True)

    def __init__(self, message: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = error_code(code, command=True)
        super().__init__(message)

    @property
    def exit_code(self) -> int:
        """What ``tongka`` exits with: the table's exit code of ``code``."""
        exit_code = error_code(self.code, command=True).exit_code
        assert exit_code is not None  # command=True refuses a code without one
        return exit_code

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.code}]"


@dataclass(frozen=True, slots=True)
class TariffProblem:
    """One thing wrong in a tariff or contract file, in words an operator can act on."""

    code: ErrorCode  # a tariff problem code, e.g. TARIFF_UNKNOWN_LINE
    file: str
    version: str  # the version's valid_from, or "-" for file-level problems
    field: str  # dotted path, e.g. versions[1].line_fares[0].lines[2]
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", error_code(self.code, kind=Kind.TARIFF))

    def __str__(self) -> str:
        return f"{self.file}: version {self.version}: {self.field}: {self.message} [{self.code}]"


class TariffError(TongkaError):
    """A tariff set that must not be used; carries every problem found, not just the first."""

    code = ErrorCode.TARIFF_INVALID

    def __init__(self, problems: list[TariffProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __str__(self) -> str:
        return str(self.args[0])  # the problems, one a line; each names its own code
