"""The one table of Tongka's stable error codes: each code's kind, exit code, HTTP status, meaning.

Every exception that stops a command, every quarantined row and every tariff or GTFS problem
carries a member of ``ErrorCode``; docs/error-codes.md is generated from this table
(``tools/gen_error_codes.py``) and tests/test_error_codes.py fails when a code in the source
is missing here or the page differs. It lives in the bottom room (``tariffs``) so that every
room can import it, tariffs included.

``ErrorCode`` is a ``StrEnum`` whose values are the codes themselves: a member compares equal
to its code string, prints as it, and is stored as it, so scripts and stored rows see exactly
the codes they always did. Codes never change meaning; a new condition gets a new code.
"""

from __future__ import annotations

import enum


class Kind(enum.Enum):
    """What a code stops: a whole command, one row, or it is one problem of a tariff set."""

    COMMAND = "command"  # an exception that stops a command: it has an exit code
    ROW = "row"  # one rejected row: quarantined with its code, the rest of the batch stored
    TARIFF = "tariff"  # one problem of a tariff set or a GTFS feed, listed inside its error


class Group(enum.Enum):
    """A section of docs/error-codes.md: the codes of one kind met in one place."""

    kind: Kind
    title: str
    note: str

    def __new__(cls, kind: Kind, title: str, note: str) -> Group:
        member = object.__new__(cls)
        member._value_ = title
        member.kind = kind
        member.title = title
        member.note = note
        return member

    ACCEPTANCE = (
        Kind.ROW, "Row errors: acceptance (SPEC §4)",
        "The acceptance checks of SPEC §4, in the order they are applied; a row that fails "
        "several checks is reported with the first one only. The last three (SPEC v1.2 §4) make "
        "acceptance a promise: an accepted tap always prices, so one bad tap can never block "
        "its day for the whole circle.",
    )
    RESUBMIT = (
        Kind.ROW, "Row errors: corrected records",
        "`tongka quarantine resubmit` checks each corrected record before acceptance.",
    )
    READER = (
        Kind.ROW, "Row errors: raw reader formats",
        "Rows a reader adapter (`tongka ingest --format ...`) could not parse. Which formats "
        "run which check, and in what order, is on each format's page in "
        "[formats/](formats/README.md).",
    )
    INGEST = (
        Kind.COMMAND, "Ingest errors (nothing written)",
        "The file cannot be read as a batch at all: nothing of it is stored. `tongka ingest` "
        "takes each file as its own unit: a refused file is listed in the table with its code "
        "and the others are still stored; the command exits 2 at the end if any file was "
        "refused (with that file's code when it was the only one).",
    )
    COMMAND_LINE = (
        Kind.COMMAND, "Command-line errors",
        "A request the command cannot carry out as given, or infrastructure it cannot reach.",
    )
    STATE = (
        Kind.COMMAND, "State, ledger and database errors",
        "The request conflicts with what is stored, or the engine refused to break one of its "
        "own contracts.",
    )
    PRICING = (
        Kind.COMMAND, "Pricing errors (`tongka clear`)",
        "Accepted taps that the tariff set cannot price (possible only when tariffs and "
        "registry disagree, e.g. a tariff file edited after the taps were accepted) stop "
        "`tongka clear` with `PricingError`, naming the input row and a hint; `UNKNOWN_LINE` "
        "(above, with the acceptance checks) is one of them too. Input tables of the wrong "
        "shape stop it with a `TAPS_*` code.",
    )
    TARIFF_COMMANDS = (
        Kind.COMMAND, "What-if, tariff and GTFS errors",
        "A tariff set or feed with problems fails as a whole with one code, after printing "
        "every problem as `file: version V: field: message [CODE]` (tariffs) or "
        "`file: row N: field: message [CODE]` (GTFS), with the codes of the two sections "
        "below.",
    )
    SERVICE = (
        Kind.COMMAND, "Service errors (HTTP only)",
        "Met only through `tongka serve`; the body is an RFC 9457 problem carrying the code.",
    )
    TARIFF = (
        Kind.TARIFF, "Tariff problems",
        "Each problem of a tariff or contract file (inside `TARIFF_INVALID`, exit 4); "
        "[tariffs.md](tariffs.md) explains the rules they check.",
    )
    GTFS = (
        Kind.TARIFF, "GTFS feed problems",
        "Each problem of a GTFS-Fares v2 feed `tongka tariffs import-gtfs` cannot read or "
        "express (inside `GTFS_INVALID`, exit 2).",
    )


_ACCEPTANCE = Group.ACCEPTANCE
_RESUBMIT = Group.RESUBMIT
_READER = Group.READER
_INGEST = Group.INGEST
_CLI = Group.COMMAND_LINE
_STATE = Group.STATE
_PRICING = Group.PRICING
_TARIFF_COMMANDS = Group.TARIFF_COMMANDS
_SERVICE = Group.SERVICE
_TARIFF = Group.TARIFF
_GTFS = Group.GTFS


class ErrorCode(enum.StrEnum):
    """A stable error code: (code, group, exit code, HTTP status, one-line meaning).

    ``exit_code`` is what ``tongka`` exits with when an error with this code stops a command
    (None for row and tariff-problem codes, which never do by themselves). ``http_status`` is
    the status the service answers with (None: never a client's fault, 500 if it reaches the
    service); it agrees with ``tongka.service.problems.STATUS_BY_CODE`` and the status each
    error class gives, so that mapping can become a lookup here.
    """

    group: Group
    exit_code: int | None
    http_status: int | None
    meaning: str

    def __new__(cls, code: str, group: Group, exit_code: int | None, http_status: int | None,
                meaning: str) -> ErrorCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.group = group
        member.exit_code = exit_code
        member.http_status = http_status
        member.meaning = meaning
        return member

    @property
    def kind(self) -> Kind:
        return self.group.kind

    # ----------------------------------------------------------- row errors: acceptance
    # In SPEC §4 order; clearing.accept.CHECKS applies them in this order, with their fields.
    MISSING_VALUE = ("MISSING_VALUE", _ACCEPTANCE, None, None,
                     "a field is null (possible only in files whose schema allows nulls)")
    UNKNOWN_OPERATOR = ("UNKNOWN_OPERATOR", _ACCEPTANCE, None, None,
                        "the operator is not in the registry")
    UNKNOWN_ISSUER = ("UNKNOWN_ISSUER", _ACCEPTANCE, None, None,
                      "the issuer is not in the registry")
    UNKNOWN_CITY = ("UNKNOWN_CITY", _ACCEPTANCE, None, None,
                    "the city is not one of the circle's nine GB/T 2260 codes")
    # also a pricing error (exit 2): a tap the kernels meet on a line the tariff set lacks
    UNKNOWN_LINE = ("UNKNOWN_LINE", _ACCEPTANCE, 2, None,
                    "the operator runs no line with this id; in `tongka clear` (exit 2): an "
                    "accepted tap's line the tariff set does not know")
    UNKNOWN_STOP = ("UNKNOWN_STOP", _ACCEPTANCE, None, None,
                    "the stop is not 0 and not in the registry")
    BAD_TAP_TYPE = ("BAD_TAP_TYPE", _ACCEPTANCE, None, None, "not 0 FLAT, 1 ENTRY or 2 EXIT")
    BAD_PRODUCT = ("BAD_PRODUCT", _ACCEPTANCE, None, None,
                   "not 0-4 (ordinary, student, senior, disabled, other)")
    BAD_MEDIA = ("BAD_MEDIA", _ACCEPTANCE, None, None,
                 "not 0-5 (card, shaped card, NFC phone, wearable, social-security card, "
                 "QR code)")
    OUTSIDE_SERVICE_DAY = ("OUTSIDE_SERVICE_DAY", _ACCEPTANCE, None, None,
                           "the tap is not in the batch's declared service day (04:00 to "
                           "04:00 China Standard Time)")
    STOP_NOT_ON_LINE = ("STOP_NOT_ON_LINE", _ACCEPTANCE, None, None,
                        "the stop (not 0) is not a stop of the line")
    STOP_ZERO_ON_NETWORK = ("STOP_ZERO_ON_NETWORK", _ACCEPTANCE, None, None,
                            "stop 0 (unknown) on an entry-exit line; it is allowed only on "
                            "flat lines")
    BAD_DEBIT = ("BAD_DEBIT", _ACCEPTANCE, None, None, "negative and not -1 (account-based)")
    CITY_MISMATCH = ("CITY_MISMATCH", _ACCEPTANCE, None, None,
                     "not the stop's city; for stop 0, not the city of the line's operator")
    TAP_TYPE_LINE_MISMATCH = ("TAP_TYPE_LINE_MISMATCH", _ACCEPTANCE, None, None,
                              "an ENTRY or EXIT on a flat line, or a FLAT tap on an entry-exit "
                              "line")
    NO_TARIFF_VERSION = ("NO_TARIFF_VERSION", _ACCEPTANCE, None, None,
                         "no tariff version of the tap's tariff area (its line's operator's "
                         "city) is in force on the batch's service day")
    UNPRICEABLE_LINE = ("UNPRICEABLE_LINE", _ACCEPTANCE, None, None,
                        "the version in force prices no fare for the line (no flat fare, no "
                        "network fares, or no ordinary price for its mode)")
    DEBIT_TOO_HIGH = ("DEBIT_TOO_HIGH", _ACCEPTANCE, None, None,
                      "a stored-value debit above the most one leg can cost in the area that "
                      "day (the largest flat fare or network `max_fare` in force); equal is "
                      "accepted")

    # ----------------------------------------------------------- row errors: corrected records
    BAD_RECORD = ("BAD_RECORD", _RESUBMIT, None, None,
                  "a corrected record is not a canonical tap (a field missing, of the wrong "
                  "type or out of its storage range); the field is named")

    # ----------------------------------------------------------- row errors: reader adapters
    RECORD_EMPTY = ("RECORD_EMPTY", _READER, None, None,
                    "reserved: blank lines are skipped, not rows (kept for plugin adapters)")
    RECORD_LENGTH = ("RECORD_LENGTH", _READER, None, None,
                     "a fixed-width record of the wrong length (card: not 136 characters)")
    RECORD_TYPE = ("RECORD_TYPE", _READER, None, None,
                   "an unknown record tag or layout version (not `TU1` / `SSC3`)")
    RECORD_ENCODING = ("RECORD_ENCODING", _READER, None, None,
                       "bytes outside the format's character set (ssc: 7-bit ASCII)")
    JSON_INVALID = ("JSON_INVALID", _READER, None, None,
                    "a JSON Lines row that is not exactly one JSON object in UTF-8")
    COLUMN_COUNT = ("COLUMN_COUNT", _READER, None, None,
                    "a delimited record with the wrong number of fields (ssc: 17)")
    FIELD_MISSING = ("FIELD_MISSING", _READER, None, None,
                     "a required field is absent, `null` or (ssc) empty")
    FIELD_TYPE = ("FIELD_TYPE", _READER, None, None,
                  "a JSON value of the wrong type: a string for a number, a float, a boolean, "
                  "an array, ...")
    FIELD_FORMAT = ("FIELD_FORMAT", _READER, None, None,
                    "wrong characters or length: a non-digit in a number, a card number not 20 "
                    "digits, a TAC not 8 hex digits, a malformed timestamp, control characters")
    FIELD_RANGE = ("FIELD_RANGE", _READER, None, None,
                   "a number outside what the canonical tap or the T-Union block can hold "
                   "(SPEC §3 widths)")
    TIME_INVALID = ("TIME_INVALID", _READER, None, None,
                    "a timestamp that names no real instant (month 13, 30 February, 24:00, an "
                    "offset beyond ±14:00)")
    VALUE_UNKNOWN = ("VALUE_UNKNOWN", _READER, None, None,
                     "a coded value outside its list: form, transaction type, direction, tap "
                     "kind, device kind, product name")
    TXN_MISMATCH = ("TXN_MISMATCH", _READER, None, None,
                    "transaction type and entry/exit flag contradict each other (06 with a "
                    "flag, 09 without)")
    SS_NUMBER_INVALID = ("SS_NUMBER_INVALID", _READER, None, None,
                         "the social-security number fails its ISO 7064 MOD 11-2 check "
                         "character (GB 11643)")
    TAC_KEY_UNKNOWN = ("TAC_KEY_UNKNOWN", _READER, None, None,
                       "no TAC key is configured for the record's issuer: it cannot be "
                       "authenticated")
    TAC_INVALID = ("TAC_INVALID", _READER, None, None,
                   "the TAC does not authenticate the record: forged or altered")
    QR_MALFORMED = ("QR_MALFORMED", _READER, None, None,
                    "the code is not `base64url(payload).base64url(signature)` with a "
                    "well-formed payload")
    QR_UNKNOWN_KEY = ("QR_UNKNOWN_KEY", _READER, None, None,
                      "the code names a key id the centre has no public key for")
    QR_FORGED = ("QR_FORGED", _READER, None, None,
                 "the Ed25519 signature does not verify, or the key signs for another issuer")
    QR_NOT_YET_VALID = ("QR_NOT_YET_VALID", _READER, None, None,
                        "scanned before its issue time, beyond the allowed clock skew (default "
                        "60 s)")
    QR_EXPIRED = ("QR_EXPIRED", _READER, None, None, "scanned after its expiry")
    QR_REPLAYED = ("QR_REPLAYED", _READER, None, None,
                   "the account's nonce was already used in an earlier scan with another "
                   "device key")

    # ----------------------------------------------------------- ingest errors (exit 2)
    INPUT_INVALID = ("INPUT_INVALID", _INGEST, 2, 400,
                     "a file that cannot be read as a batch (the generic input error, when no "
                     "code below says more)")
    INPUT_MISSING = ("INPUT_MISSING", _INGEST, 2, 400, "the file does not exist: check the path")
    INPUT_NOT_FILE = ("INPUT_NOT_FILE", _INGEST, 2, 400,
                      "the path is a directory, a device or a pipe: give a regular file")
    INPUT_OUTSIDE_DIR = ("INPUT_OUTSIDE_DIR", _INGEST, 2, 400,
                         "the file (after following links) is outside the configured input "
                         "directory: copy it into the input directory")
    INPUT_TOO_LARGE = ("INPUT_TOO_LARGE", _INGEST, 2, 413,
                       "more bytes (default limit 1 GiB) or rows (default 50 million) than one "
                       "batch may have: split the day into several batch files")
    INPUT_UNREADABLE = ("INPUT_UNREADABLE", _INGEST, 2, 400,
                        "the file exists but cannot be read (permissions, an I/O error): check "
                        "the file's permissions")
    INPUT_CORRUPT = ("INPUT_CORRUPT", _INGEST, 2, 400,
                     "not a readable Parquet file (truncated, damaged, or not Parquet at all), "
                     "or a corrections file line that is not JSON: re-export the file")
    INPUT_SCHEMA = ("INPUT_SCHEMA", _INGEST, 2, 400,
                    "the columns are not exactly those of the canonical tap, with their types "
                    "(the message lists missing, unexpected and mistyped columns): fix the "
                    "exporter (see [batch-format.md](batch-format.md))")
    INPUT_METADATA = ("INPUT_METADATA", _INGEST, 2, 400,
                      "no service day or operator (neither in the file's metadata nor given "
                      "with `--date` / `--operator`), an unreadable value, or an operator not "
                      "in the registry: give `--date` and `--operator`")
    INPUT_RESUBMIT_UNKNOWN = ("INPUT_RESUBMIT_UNKNOWN", _INGEST, 2, 400,
                              "a corrections file names quarantine ids that do not exist: "
                              "export the quarantine again")
    INPUT_FILES_REFUSED = ("INPUT_FILES_REFUSED", _INGEST, 2, 400,
                           "`tongka ingest` of several files refused more than one of them; the "
                           "table shows each file's own code, and the other files were stored: "
                           "fix and send the refused files again")
    FORMAT_UNKNOWN = ("FORMAT_UNKNOWN", _INGEST, 2, 400,
                      "`--format` names no adapter, or no adapter recognises the file (Parquet "
                      "is not a raw format)")
    FORMAT_AMBIGUOUS = ("FORMAT_AMBIGUOUS", _INGEST, 2, 400,
                        "more than one adapter recognises the file: name one with `--format`")
    FORMAT_PLUGIN = ("FORMAT_PLUGIN", _INGEST, 2, 400, "a reader plugin adapter failed to load")
    READER_CONFIG = ("READER_CONFIG", _INGEST, 2, 503,
                     "no PII tokenisation key (`TONGKA_PII_KEY`), or malformed reader keys (see "
                     "[formats/](formats/README.md)); over HTTP, the centre's configuration")

    # ----------------------------------------------------------- command-line errors
    DATE_OUT_OF_RANGE = ("DATE_OUT_OF_RANGE", _CLI, 2, 400,
                         "a `--date` (or month) outside the service days Tongka handles, "
                         "1970-01-02 to 2199-12-31")
    DAY_RANGE_INVALID = ("DAY_RANGE_INVALID", _CLI, 2, 400,
                         "a range of service days whose first day is after its last, or longer "
                         "than the most one request may ask for")
    MONTH_INVALID = ("MONTH_INVALID", _CLI, 2, 400,
                     "`close-month` needs `YYYY-MM` (e.g. `2026-11`)")
    DB_URL_INVALID = ("DB_URL_INVALID", _CLI, 2, 400,
                      "`--db` / `TONGKA_DATABASE_URL` is not a database URL")
    DB_URL_UNSUPPORTED = ("DB_URL_UNSUPPORTED", _CLI, 2, 400,
                          "the URL names a database other than SQLite or PostgreSQL")
    DIR_NOT_EMPTY = ("DIR_NOT_EMPTY", _CLI, 2, 400,
                     "`demo --keep DIR`: DIR exists and is not an empty directory (Tongka never "
                     "empties a folder it did not create)")
    ROW_CODE_UNKNOWN = ("ROW_CODE_UNKNOWN", _CLI, 2, 400,
                        "`quarantine list/export --code C`: C is no row error code")
    SCHEDULER_ADDRESS = ("SCHEDULER_ADDRESS", _CLI, 2, 400,
                         "`--scheduler` is not an address like `tcp://host:8786`")
    PARTITIONS_INVALID = ("PARTITIONS_INVALID", _CLI, 2, 400,
                          "`clear --partitions N`: N is not 1 to 64 (the card buckets), or "
                          "`--scheduler` / `--storage` / `--reference` do not go with it")
    SEAL_KEY_MISSING = ("SEAL_KEY_MISSING", _CLI, 2, 400,
                        "`quarantine export --with-raw` without `TONGKA_PII_KEY`")
    SEAL_KEY_INVALID = ("SEAL_KEY_INVALID", _CLI, 2, 400,
                        "the key given to open the sealed raw records is too short")
    SEAL_KEY_WRONG = ("SEAL_KEY_WRONG", _CLI, 2, 400,
                      "the sealed raw records do not open with the key given: another key")
    SEAL_CORRUPT = ("SEAL_CORRUPT", _CLI, 2, 400,
                    "a sealed raw record is damaged (an unknown format)")
    WITHDRAW_REASON = ("WITHDRAW_REASON", _CLI, 2, 400,
                       "`batches withdraw` needs a `--reason` of 1 to 2,000 characters")
    DENYLIST_REASON = ("DENYLIST_REASON", _CLI, 2, 400,
                       "`denylist clear` needs a `--reason` of 1 to 2,000 characters (a "
                       "clearing is evidence)")
    DENYLIST_ISSUER_UNKNOWN = ("DENYLIST_ISSUER_UNKNOWN", _CLI, 2, 400,
                               "`denylist clear --issuer N`: N is no issuer of the registry "
                               "(over HTTP: a finance key named no issuer)")
    DENYLIST_CARDS_INVALID = ("DENYLIST_CARDS_INVALID", _CLI, 2, 400,
                              "`denylist clear` needs 1 to 1,000 `--card` tokens, each a whole "
                              "number from 0 to 2^64-1 as the deny list shows it")
    DENYLIST_THROUGH_FUTURE = ("DENYLIST_THROUGH_FUTURE", _CLI, 2, 400,
                               "`denylist clear --through C`: C is after the current service "
                               "day; a clearing never reaches signals still to come")
    ROLE_INVALID = ("ROLE_INVALID", _CLI, 2, 400, "`keys create --role R`: R is no role")
    ROLE_PARTY_MISMATCH = ("ROLE_PARTY_MISMATCH", _CLI, 2, 400,
                           "an operator or issuer key needs its `--operator N` / `--issuer N`; "
                           "other roles take no party, and no key takes both")
    KEY_NOT_FOUND = ("KEY_NOT_FOUND", _CLI, 2, 404, "`keys revoke ID`: no API key has this id")
    SCALE_NOT_INSTALLED = ("SCALE_NOT_INSTALLED", _CLI, 2, None,
                           "`--partitions` needs the optional `scale` extra (dask.distributed): "
                           "`pip install 'tongka[scale]'`, or clear without `--partitions`")
    SCHEDULER_UNREACHABLE = ("SCHEDULER_UNREACHABLE", _CLI, 1, None,
                             "no dask scheduler answers at `--scheduler` within 5 s")
    DB_UNREACHABLE = ("DB_UNREACHABLE", _CLI, 1, 503,
                      "the database server cannot be reached (refused, unknown host, timeout)")
    DB_LOCKED = ("DB_LOCKED", _CLI, 1, 503,
                 "another command held the SQLite database for over 60 s")
    INTERNAL_ERROR = ("INTERNAL_ERROR", _CLI, 1, None,
                      "an error Tongka did not foresee: one line, the traceback only with "
                      "`TONGKA_DEBUG=1`; please report it")
    TONGKA_ERROR = ("TONGKA_ERROR", _CLI, 1, None,
                    "the generic error of the engine, when no code above or below says more")

    # ----------------------------------------------------------- state, ledger, database
    STATE_CONFLICT = ("STATE_CONFLICT", _STATE, 3, 409,
                      "the request conflicts with stored state (the generic state error, when "
                      "no code below says more)")
    BATCH_NOT_FOUND = ("BATCH_NOT_FOUND", _STATE, 3, 404,
                       "no batch has this id or hash prefix (`tongka batches show`, `withdraw`)")
    BATCH_WITHDRAWN = ("BATCH_WITHDRAWN", _STATE, 3, 409,
                       "`tongka batches withdraw` of a batch already withdrawn")
    NO_DATA_DIR = ("NO_DATA_DIR", _STATE, 3, 409,
                   "a read-only command (`batches`, `quarantine`, `ledger`, `report`) found no "
                   "data directory or database: nothing was ingested there, or `--data-dir` is "
                   "wrong")
    DAY_UNPRICEABLE = ("DAY_UNPRICEABLE", _STATE, 3, 409,
                       "stored taps of the day that the current tariff set cannot price (it "
                       "changed after acceptance), listed by batch and stored row: fix the "
                       "tariff set or `tongka batches withdraw ID`")
    DAY_NOT_CLEARED = ("DAY_NOT_CLEARED", _STATE, 3, 409,
                       "`tongka settle` or `report` for a day never cleared: run `tongka clear "
                       "--date D` first")
    TAPSTORE_MISSING = ("TAPSTORE_MISSING", _STATE, 3, 409,
                        "the database says a batch was stored but its tap file is gone from the "
                        "data directory: restore it from backup")
    RISK_NOT_STORED = ("RISK_NOT_STORED", _STATE, 3, 409,
                       "the day's risk signals could not be stored")
    DENYLIST_CARD_NOT_LISTED = ("DENYLIST_CARD_NOT_LISTED", _STATE, 3, 404,
                                "a card to clear is on none of its issuer's deny lists of days "
                                "up to `--through` + 29 (the same answer for another issuer's "
                                "card); nothing was cleared")
    PAYMENT_FILE_CONFLICT = ("PAYMENT_FILE_CONFLICT", _STATE, 3, 409,
                             "a settlement run's payment file exists with other contents than "
                             "the run's stored instructions: never overwritten; investigate "
                             "before paying")
    SETTLEMENT_RUNNING = ("SETTLEMENT_RUNNING", _STATE, 3, 409,
                          "another settlement of the same day holds its lock; try again when it "
                          "has finished")
    SETTLEMENT_REASON_REQUIRED = ("SETTLEMENT_REASON_REQUIRED", _STATE, 3, 409,
                                  "a settled day changed and is settled again with reason "
                                  "`initial`: give `--reason`")
    SETTLEMENT_BAD_REASON = ("SETTLEMENT_BAD_REASON", _STATE, 3, 409,
                             "`--reason` is not one of `initial`, `late_batch`, "
                             "`tariff_correction`, `manual_correction`")
    SETTLEMENT_STALE_LEGS = ("SETTLEMENT_STALE_LEGS", _STATE, 3, 409,
                             "the stored legs were priced by a tariff version the tariff set no "
                             "longer has: clear the day again")
    MONTH_NOT_SETTLED = ("MONTH_NOT_SETTLED", _STATE, 3, 409,
                         "`tongka close-month` while a day of the month still needs settlement")
    LEDGER_INVALID = ("LEDGER_INVALID", _STATE, 1, None,
                      "the ledger refused a write that would break one of its rules (the "
                      "generic ledger error, when no code below says more)")
    LEDGER_UNBALANCED = ("LEDGER_UNBALANCED", _STATE, 1, None,
                         "a journal entry whose postings do not sum to 0: refused at commit")
    LEDGER_SEALED = ("LEDGER_SEALED", _STATE, 1, None,
                     "postings added to an entry already closed by its settlement run (refused "
                     "by the database)")
    LEDGER_NOT_IN_CHART = ("LEDGER_NOT_IN_CHART", _STATE, 1, None,
                           "a posting to an account the chart of accounts does not allow for "
                           "the party's role")
    LEDGER_MISMATCH = ("LEDGER_MISMATCH", _STATE, 1, None,
                       "`tongka ledger verify` found differences; they are listed above the "
                       "error")
    DB_ERROR = ("DB_ERROR", _STATE, 3, None,
                "the database is not one this code may use (the generic database error, when "
                "no code below says more)")
    DB_UPGRADE_NEEDS_OWNER = ("DB_UPGRADE_NEEDS_OWNER", _STATE, 3, None,
                              "the engine's role tried to change the schema: run `tongka db "
                              "upgrade --owner-url OWNER`")
    DB_ENGINE_ROLE_PRIVILEGED = ("DB_ENGINE_ROLE_PRIVILEGED", _STATE, 3, None,
                                 "`db upgrade --owner-url`: the engine role is a superuser, the "
                                 "owner or a member of it, so the ledger's guards would not "
                                 "hold")
    DB_ROLES_NEED_POSTGRESQL = ("DB_ROLES_NEED_POSTGRESQL", _STATE, 3, None,
                                "`--owner-url` with a SQLite database")
    DB_NEWER_THAN_CODE = ("DB_NEWER_THAN_CODE", _STATE, 3, None,
                          "the database schema was written by a newer version of tongka; "
                          "upgrade tongka")

    # ----------------------------------------------------------- pricing errors (exit 2)
    PRICING_FAILED = ("PRICING_FAILED", _PRICING, 2, None,
                      "the kernels met taps the tariff set cannot price (the generic pricing "
                      "error, when no code below says more)")
    NO_VERSION = ("NO_VERSION", _PRICING, 2, None,
                  "no tariff version of the line's area is in force on the tap's service day")
    NETWORK_NOT_PRICED = ("NETWORK_NOT_PRICED", _PRICING, 2, None,
                          "an ENTRY/EXIT leg on a flat line, or on a network the version in "
                          "force does not price")
    LINE_NOT_PRICED = ("LINE_NOT_PRICED", _PRICING, 2, None,
                       "a FLAT leg on a line with no flat fare (a FLAT tap on an entry-exit "
                       "network?)")
    STOP_NOT_IN_NETWORK = ("STOP_NOT_IN_NETWORK", _PRICING, 2, None,
                           "a journey's stop is not a stop of its network")
    NO_PRICE = ("NO_PRICE", _PRICING, 2, None,
                "the version in force has no ORDINARY price for the leg's mode")
    TAPS_MISSING_COLUMN = ("TAPS_MISSING_COLUMN", _PRICING, 2, 400,
                           "the taps table lacks a column of the canonical tap")
    TAPS_WRONG_TYPE = ("TAPS_WRONG_TYPE", _PRICING, 2, 400,
                       "a taps column has another type than the canonical tap's")
    TAPS_NULL = ("TAPS_NULL", _PRICING, 2, 400,
                 "a taps column holds nulls: every tap field is required (SPEC §3)")
    TAPS_RAGGED = ("TAPS_RAGGED", _PRICING, 2, 400, "the taps columns differ in length")
    RISK_BAD_ORDER = ("RISK_BAD_ORDER", _PRICING, 2, 400,
                      "the tap order given to the risk signals is not a card order of the taps")
    RISK_REFERENCE_NEEDS_TABLE = ("RISK_REFERENCE_NEEDS_TABLE", _PRICING, 2, 400,
                                  "the reference twin of the risk signals reads the day's taps "
                                  "as a table, not as sorted records")

    # ----------------------------------------------------------- what-if, tariff, GTFS
    WHATIF_RANGE = ("WHATIF_RANGE", _TARIFF_COMMANDS, 2, 400,
                    "`tongka whatif` needs `--date D`, or `--from D1 --to D2` with D1 ≤ D2")
    WHATIF_OUT_IN_DATA_DIR = ("WHATIF_OUT_IN_DATA_DIR", _TARIFF_COMMANDS, 2, 400,
                              "the what-if report may not be written inside the data directory "
                              "(a what-if changes nothing there)")
    WHATIF_UNPRICEABLE = ("WHATIF_UNPRICEABLE", _TARIFF_COMMANDS, 3, 409,
                          "stored taps the proposed tariff set cannot price, listed by batch "
                          "and row")
    TARIFF_INVALID = ("TARIFF_INVALID", _TARIFF_COMMANDS, 4, 422,
                      "a tariff set that must not be used: every problem is listed, each with "
                      "one of the tariff problem codes")
    GTFS_INVALID = ("GTFS_INVALID", _TARIFF_COMMANDS, 2, None,
                    "`tongka tariffs import-gtfs`: the feed has problems, each listed with one "
                    "of the GTFS problem codes")

    # ----------------------------------------------------------- service (HTTP only)
    AUTH_REQUIRED = ("AUTH_REQUIRED", _SERVICE, 2, 401,
                     "no API key sent: `Authorization: Bearer <key>`")
    AUTH_INVALID = ("AUTH_INVALID", _SERVICE, 2, 401,
                    "the API key is malformed, unknown, wrong or revoked (one answer for all)")
    CSRF_INVALID = ("CSRF_INVALID", _SERVICE, 2, 403,
                    "a form, or a cookie-signed-in API request that changes something, came "
                    "without the session's CSRF token (X-CSRF-Token)")
    FORBIDDEN = ("FORBIDDEN", _SERVICE, 1, 403, "the key's role may not do this")
    OPERATOR_MISMATCH = ("OPERATOR_MISMATCH", _SERVICE, 1, 403,
                         "the file or a corrected record names another operator than the key's")
    NOT_FOUND = ("NOT_FOUND", _SERVICE, 1, 404,
                 "no such resource, or another party's (never confirmed)")
    JOB_NOT_FOUND = ("JOB_NOT_FOUND", _SERVICE, 1, 404, "no job has this id")
    STATEMENT_NOT_FOUND = ("STATEMENT_NOT_FOUND", _SERVICE, 1, 404,
                           "no statement of this party for this day, or another party's")
    METHOD_NOT_ALLOWED = ("METHOD_NOT_ALLOWED", _SERVICE, None, 405,
                          "the resource does not take this HTTP method")
    NOT_ACCEPTABLE = ("NOT_ACCEPTABLE", _SERVICE, 1, 406,
                      "the `Accept` header names no type the resource has")
    UPLOAD_TIMEOUT = ("UPLOAD_TIMEOUT", _SERVICE, 2, 408,
                      "the upload stalled, or took longer than a whole body may")
    UPLOAD_CONTENT_TYPE = ("UPLOAD_CONTENT_TYPE", _SERVICE, 2, 415,
                           "the upload's Content-Type is no batch format, or it has a "
                           "Content-Encoding")
    UPLOAD_EMPTY = ("UPLOAD_EMPTY", _SERVICE, 2, 400, "the request body is empty")
    UPLOAD_INCOMPLETE = ("UPLOAD_INCOMPLETE", _SERVICE, 2, 400,
                         "the body ended before its Content-Length, or the client went away")
    INPUT_RESUBMIT_OTHER_BATCH = ("INPUT_RESUBMIT_OTHER_BATCH", _SERVICE, 2, 400,
                                  "a corrections line names a quarantined row of another batch "
                                  "than the one in the URL")
    REQUEST_INVALID = ("REQUEST_INVALID", _SERVICE, None, 422,
                       "the request's parameters or body do not validate; `errors` lists them")
    JOB_INTERRUPTED = ("JOB_INTERRUPTED", _SERVICE, None, None,
                       "a settlement job's process ended before the job did (a job's "
                       "`error_code`, not an answer)")

    # ----------------------------------------------------------- tariff problems
    TARIFF_SYNTAX = ("TARIFF_SYNTAX", _TARIFF, None, None, "the file is not valid TOML")
    TARIFF_UNREADABLE = ("TARIFF_UNREADABLE", _TARIFF, None, None,
                         "the file cannot be read (permissions, an I/O error, not UTF-8)")
    TARIFF_NO_DIRECTORY = ("TARIFF_NO_DIRECTORY", _TARIFF, None, None,
                           "the path is not a directory of tariff files")
    TARIFF_NO_FILES = ("TARIFF_NO_FILES", _TARIFF, None, None,
                       "`tongka whatif --tariffs DIR`: DIR holds no `.toml` file")
    TARIFF_MISSING_AREA = ("TARIFF_MISSING_AREA", _TARIFF, None, None,
                           "a city of the registry has no tariff file")
    TARIFF_DUPLICATE_AREA = ("TARIFF_DUPLICATE_AREA", _TARIFF, None, None,
                             "two tariff files for one area")
    TARIFF_MISSING_FIELD = ("TARIFF_MISSING_FIELD", _TARIFF, None, None,
                            "a required field is missing")
    TARIFF_UNKNOWN_FIELD = ("TARIFF_UNKNOWN_FIELD", _TARIFF, None, None,
                            "a field name is not known (check its spelling)")
    TARIFF_FIELD = ("TARIFF_FIELD", _TARIFF, None, None,
                    "a value of the wrong type (a date in quotes, 1.5 fen), or a rule that "
                    "contradicts itself (both `rate_bp` and `fixed_fen`, bands not ascending)")
    TARIFF_FARE_RANGE = ("TARIFF_FARE_RANGE", _TARIFF, None, None,
                         "an amount outside 0..10 000 000 fen")
    TARIFF_RATE_RANGE = ("TARIFF_RATE_RANGE", _TARIFF, None, None,
                         "a rate outside 0..10000 basis points")
    TARIFF_VALUE_RANGE = ("TARIFF_VALUE_RANGE", _TARIFF, None, None,
                          "another number out of its range")
    TARIFF_UNKNOWN_PRODUCT = ("TARIFF_UNKNOWN_PRODUCT", _TARIFF, None, None,
                              "a name that is not a card product")
    TARIFF_UNKNOWN_MODE = ("TARIFF_UNKNOWN_MODE", _TARIFF, None, None,
                           "a name that is not a mode")
    TARIFF_UNKNOWN_STEP = ("TARIFF_UNKNOWN_STEP", _TARIFF, None, None,
                           "a name that is not a transfer step")
    TARIFF_UNKNOWN_CHOICE = ("TARIFF_UNKNOWN_CHOICE", _TARIFF, None, None,
                             "a name that is not one of the allowed ones")
    TARIFF_UNKNOWN_FUNDER = ("TARIFF_UNKNOWN_FUNDER", _TARIFF, None, None,
                             "a funder that is not a party that can fund a discount "
                             "(`operator`, `government`)")
    TARIFF_UNKNOWN_AREA = ("TARIFF_UNKNOWN_AREA", _TARIFF, None, None,
                           "the area is not a city of the registry")
    TARIFF_UNKNOWN_ISSUER = ("TARIFF_UNKNOWN_ISSUER", _TARIFF, None, None,
                             "an issuer the registry does not have")
    TARIFF_UNKNOWN_OPERATOR = ("TARIFF_UNKNOWN_OPERATOR", _TARIFF, None, None,
                               "an operator the registry does not have")
    TARIFF_UNKNOWN_LINE = ("TARIFF_UNKNOWN_LINE", _TARIFF, None, None,
                           "a line the registry does not have, or not a flat line of the area")
    TARIFF_UNKNOWN_NETWORK = ("TARIFF_UNKNOWN_NETWORK", _TARIFF, None, None,
                              "a network the registry does not have, or not of the area")
    TARIFF_UNKNOWN_STOP = ("TARIFF_UNKNOWN_STOP", _TARIFF, None, None,
                           "a stop the registry does not have, or not of the network")
    TARIFF_FOREIGN_OPERATOR = ("TARIFF_FOREIGN_OPERATOR", _TARIFF, None, None,
                               "an operator of another city: lines are priced by their "
                               "operator's city")
    TARIFF_UNPRICED_LINE = ("TARIFF_UNPRICED_LINE", _TARIFF, None, None,
                            "a flat line of the area with no fare")
    TARIFF_UNPRICED_NETWORK = ("TARIFF_UNPRICED_NETWORK", _TARIFF, None, None,
                               "a network of the area with no fare")
    TARIFF_NO_ORDINARY_PRICE = ("TARIFF_NO_ORDINARY_PRICE", _TARIFF, None, None,
                                "the area runs a mode with no ordinary price")
    TARIFF_CONCESSION_NOT_ACCEPTED = ("TARIFF_CONCESSION_NOT_ACCEPTED", _TARIFF, None, None,
                                      "an issuer in `concession_issuers` but not in "
                                      "`accepted_issuers`")
    TARIFF_VERSION_OVERLAP = ("TARIFF_VERSION_OVERLAP", _TARIFF, None, None,
                              "versions not in strictly ascending `valid_from`")
    TARIFF_NO_VERSIONS = ("TARIFF_NO_VERSIONS", _TARIFF, None, None, "a tariff with no version")
    TARIFF_NETWORK_DISCONNECTED = ("TARIFF_NETWORK_DISCONNECTED", _TARIFF, None, None,
                                   "a network's track graph is not connected: some distances "
                                   "do not exist")
    TARIFF_NETWORK_SPANS_CITIES = ("TARIFF_NETWORK_SPANS_CITIES", _TARIFF, None, None,
                                   "a network has lines of operators of different cities")
    TARIFF_MAX_FARE_TOO_LOW = ("TARIFF_MAX_FARE_TOO_LOW", _TARIFF, None, None,
                               "`max_fare` below a band, a matrix fare or `same_station_fare`")
    TARIFF_BAND_RANGE = ("TARIFF_BAND_RANGE", _TARIFF, None, None,
                         "a band's `upper_m` is not a positive number of metres")
    TARIFF_MATRIX_ROW = ("TARIFF_MATRIX_ROW", _TARIFF, None, None,
                         "a malformed or self-to-self matrix row")
    TARIFF_MATRIX_DUPLICATE = ("TARIFF_MATRIX_DUPLICATE", _TARIFF, None, None,
                               "a pair of stops given twice in a matrix")
    TARIFF_MATRIX_INCOMPLETE = ("TARIFF_MATRIX_INCOMPLETE", _TARIFF, None, None,
                                "ordered pairs of stops without a fare")
    TARIFF_TRANSFER_NO_STEPS = ("TARIFF_TRANSFER_NO_STEPS", _TARIFF, None, None,
                                "a transfer rule with no steps")
    TARIFF_TRANSFER_NO_MODES = ("TARIFF_TRANSFER_NO_MODES", _TARIFF, None, None,
                                "a transfer rule with no mode pairs")
    TARIFF_DUPLICATE_ISSUER = ("TARIFF_DUPLICATE_ISSUER", _TARIFF, None, None,
                               "an issuer given twice")
    TARIFF_DUPLICATE_LINE_FARE = ("TARIFF_DUPLICATE_LINE_FARE", _TARIFF, None, None,
                                  "a line given two flat fares")
    TARIFF_DUPLICATE_NETWORK = ("TARIFF_DUPLICATE_NETWORK", _TARIFF, None, None,
                                "a network given two fare tables")
    TARIFF_DUPLICATE_PRICE = ("TARIFF_DUPLICATE_PRICE", _TARIFF, None, None,
                              "a product and mode given two prices")
    TARIFF_DUPLICATE_CAP = ("TARIFF_DUPLICATE_CAP", _TARIFF, None, None,
                            "a card product given two daily caps")
    TARIFF_DUPLICATE_REBATE = ("TARIFF_DUPLICATE_REBATE", _TARIFF, None, None,
                               "two rebate rules of one network from the same day")
    TARIFF_DUPLICATE_CONTRACT = ("TARIFF_DUPLICATE_CONTRACT", _TARIFF, None, None,
                                 "an operator and issuer with two fee contracts")
    TARIFF_REBATE_TIERS = ("TARIFF_REBATE_TIERS", _TARIFF, None, None,
                           "a monthly rebate without tiers, tiers not ascending, or a rebate "
                           "above its spend")
    TARIFF_REBATE_OPERATOR = ("TARIFF_REBATE_OPERATOR", _TARIFF, None, None,
                              "a rebate owed by an operator that runs no line of the network")
    TARIFF_REBATE_VALID_FROM = ("TARIFF_REBATE_VALID_FROM", _TARIFF, None, None,
                                "a rebate rule's `valid_from` before its version's, or on or "
                                "after the next version's (never in force)")

    # ----------------------------------------------------------- GTFS problems
    GTFS_MISSING_FILE = ("GTFS_MISSING_FILE", _GTFS, None, None,
                         "a required file is absent (or the feed is no directory)")
    GTFS_MISSING_FIELD = ("GTFS_MISSING_FIELD", _GTFS, None, None,
                          "a required column is absent")
    GTFS_BAD_ROW = ("GTFS_BAD_ROW", _GTFS, None, None, "a row that cannot be read")
    GTFS_BAD_AMOUNT = ("GTFS_BAD_AMOUNT", _GTFS, None, None,
                       "an amount that is not a decimal with at most 2 places")
    GTFS_UNKNOWN_ID = ("GTFS_UNKNOWN_ID", _GTFS, None, None,
                       "an id referenced that no file defines")
    GTFS_NO_FARE = ("GTFS_NO_FARE", _GTFS, None, None, "a leg rule without a fare product")
    GTFS_UNSUPPORTED = ("GTFS_UNSUPPORTED", _GTFS, None, None,
                        "a Fares v2 construct Tongka's tariff model cannot hold")


def error_code(code: str, *, kind: Kind | None = None, command: bool = False) -> ErrorCode:
    """The member for ``code``; ValueError when the table has none (or of another kind).

    ``command``: the code must be able to stop a command (it has an exit code). The one place
    every error value is checked, so a literal that is not in the table cannot slip in.
    """
    try:
        member = ErrorCode[code]  # by name: every member's name is its code (a test checks)
    except KeyError:
        raise ValueError(f"{code!r} is not a Tongka error code: add it to the table in "
                         "tariffs/error_codes.py (and run tools/gen_error_codes.py)") from None
    if kind is not None and member.kind is not kind:
        raise ValueError(f"{code} is a {member.kind.value} code, not a {kind.value} code")
    if command and member.exit_code is None:
        raise ValueError(f"{code} cannot stop a command: it has no exit code in the table")
    return member


def codes_of(*groups: Group) -> tuple[ErrorCode, ...]:
    """The members of ``groups``, in table order."""
    return tuple(c for c in ErrorCode if c.group in groups)


ROW_CODES: frozenset[ErrorCode] = frozenset(c for c in ErrorCode if c.kind is Kind.ROW)
