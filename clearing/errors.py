"""The two error channels (STYLE §8): row errors are values, broken contracts are exceptions.

A bad row is a ``RowError`` with a stable code, collected and quarantined; a batch of ten
million rows with three bad ones is a good batch with three quarantined rows. A failure that
stops a command is a ``TongkaError`` subclass, each with its own stable ``code`` and exit code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected input row: where it was, what is wrong, and the record as it came in."""

    code: str  # stable, e.g. UNKNOWN_STOP; listed in docs/error-codes.md
    row: int  # 0-based row number in the source file (line number - 1 for text formats)
    field: str  # the field the check concerns, "" when it concerns the whole row
    message: str  # words an operator can act on; never a raw card or social-security number
    # the original record, PII already tokenised
    record: dict = dataclasses.field(default_factory=dict)
    # the record's raw bytes as they came in (SPEC v1.2 §4: a row can always be corrected);
    # b"" when the adapter has none. May hold personal numbers: stored only encrypted.
    raw: bytes = dataclasses.field(default=b"", repr=False)  # never in a log line


class TongkaError(Exception):
    """Base of every error that stops a command; ``code`` is stable, ``exit_code`` too."""

    code = "TONGKA_ERROR"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.code}]"


class InputError(TongkaError):
    """A file that cannot be read as a batch at all: missing, corrupt, wrong schema, hostile."""

    code = "INPUT_INVALID"
    exit_code = 2


class StateError(TongkaError):
    """The request conflicts with stored state: day not cleared, settlement running, ..."""

    code = "STATE_CONFLICT"
    exit_code = 3
