"""The stable row-error codes of the reader adapters, one per way a raw record can be wrong.

The codes are members of the one error-code table (``tariffs.error_codes``, group READER);
adapters flag rows with ``ErrorCode`` members. Codes are part of the contract with operators
(quarantine reports, resubmission tools) and never change meaning; docs/formats/README.md
lists them. A record that fails several checks is reported with the first one an adapter
runs, in the order each format's page documents: the record's shape, then each field in
layout order, then the checks across fields, then authenticity (TAC, signature), then replay.
"""

from __future__ import annotations

from tariffs.error_codes import ErrorCode, Group, codes_of

# The readers' codes in table order; RowCode is the table itself, for plugin adapters written
# against the name this module used to define (one enum per concept: no second table).
RowCode = ErrorCode
ROW_CODES: tuple[str, ...] = codes_of(Group.READER)
