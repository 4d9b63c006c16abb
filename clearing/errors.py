"""The two error channels (STYLE §8): row errors are values, broken contracts are exceptions.

A bad row is a ``RowError`` with a stable code, collected and quarantined; a batch of ten
million rows with three bad ones is a good batch with three quarantined rows. A failure that
stops a command is a ``TongkaError`` subclass, each with its own stable ``code`` and exit code.
Every code, of either channel, is a member of ``tariffs.error_codes.ErrorCode`` (the one
table, from which docs/error-codes.md is generated); a code not in it is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tariffs.error_codes import ErrorCode, Kind, error_code
from tariffs.errors import TongkaError

__all__ = ["ErrorCode", "InputError", "RowError", "StateError", "TongkaError"]

_CODES = frozenset(c.name for c in ErrorCode)
_ROW_CODES = {c.name: c for c in ErrorCode if c.kind is Kind.ROW}


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected input row: where it was, what is wrong, and the record as it came in."""

    code: str  # a row code of the table (an ErrorCode once constructed), e.g. UNKNOWN_STOP
    row: int  # 0-based row number in the source file (line number - 1 for text formats)
    field: str  # the field the check concerns, "" when it concerns the whole row
    message: str  # words an operator can act on; never a raw card or social-security number
    # the original record, PII already tokenised
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    # the record's raw bytes as they came in (SPEC v1.2 §4: a row can always be corrected);
    # b"" when the adapter has none. May hold personal numbers: stored only encrypted.
    raw: bytes = dataclasses.field(default=b"", repr=False)  # never in a log line

    def __post_init__(self) -> None:
        # A code of the table becomes its member, and must be a row code. An unknown one is
        # kept as given (a plugin adapter's, a test's); the source scan of
        # tests/test_error_codes.py keeps every code the product names in the table.
        member = _ROW_CODES.get(self.code)  # once per rejected row: a dict, not the table
        if member is not None:
            object.__setattr__(self, "code", member)
        elif self.code in _CODES:
            error_code(self.code, kind=Kind.ROW)  # raises: a code of another kind


class InputError(TongkaError):
    """A file that cannot be read as a batch at all: missing, corrupt, wrong schema, hostile."""

    code: str = ErrorCode.INPUT_INVALID  # str: a subclass names its own member


class StateError(TongkaError):
    """The request conflicts with stored state: day not cleared, settlement running, ..."""

    code: str = ErrorCode.STATE_CONFLICT
