"""One table of error codes (tariffs.error_codes): the source uses only its codes, the errors
refuse any other, and docs/error-codes.md is exactly what the table generates.

The source scan reads the product packages as syntax trees, so a new literal code anywhere
(also in a module that still spells its codes as strings) fails here until it is in the table.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clearing.accept import CHECKS, CODES, PRICING_CODES
from clearing.errors import InputError, RowError, StateError, TongkaError
from clearing.kernels import OK, STATUS_NAMES
from readers.codes import ROW_CODES as READER_CODES
from tariffs.error_codes import ROW_CODES, ErrorCode, Group, Kind, codes_of, error_code
from tariffs.errors import TariffError, TariffProblem
from tariffs.gtfs import GtfsError, GtfsProblem

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clearing", "tariffs", "readers", "settlement", "tongka")
CODE_SHAPE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")  # FORBIDDEN, INPUT_MISSING, ...
PREFIXED = re.compile(r"(?:TARIFF|GTFS)(?:_[A-Z0-9]+)+")  # shapes only codes have
TABLE = "tariffs/error_codes.py"  # the table itself is not scanned
# Calls whose arguments carry a code: the error and problem types, and the helpers that make them.
CODE_CALLS = frozenset({
    "RowError", "TariffProblem", "GtfsProblem", "Check", "Reason", "UnpriceableTap",
    "RefusedFile", "problem", "report", "bad", "flag", "flag_rows",
})
CODE_KEYWORDS = frozenset({"code", "error_code"})
HTTP_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 503})


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_error_codes",
                                                  ROOT / "tools" / "gen_error_codes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the source scan


@dataclass(frozen=True)
class Use:
    """A code the source names: a string literal, or an ``ErrorCode.X`` attribute."""

    where: str  # path:line
    code: str
    call: str  # the called name, the class whose code it is, or "" elsewhere
    literal: bool


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _codes_in(node: ast.AST | None) -> Iterator[tuple[str, bool]]:
    """(code, is a literal) of the code-shaped strings and ErrorCode members in an expression,
    f-strings excepted (their pieces are text, not codes)."""
    if node is None or isinstance(node, ast.JoinedStr):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if CODE_SHAPE.fullmatch(node.value):
            yield node.value, True
        return
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in ("ErrorCode", "RowCode")):
        yield node.attr, False
        return
    for child in ast.iter_child_nodes(node):
        yield from _codes_in(child)


def _target_names(node: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
            for t in targets]


def scan(source: str, name: str) -> list[Use]:
    """Every code ``source`` names where a code goes: a ``code=`` argument, an argument of an
    error type or its helpers, a class's ``code``, a value assigned to a code or a code table
    (``STATUS_BY_CODE``, ``STATUS_NAMES``), and any ``TARIFF_*`` / ``GTFS_*`` string."""
    tree = ast.parse(source)
    uses: list[Use] = []

    def add(node: ast.AST, expr: ast.AST | None, call: str) -> None:
        for code, literal in _codes_in(expr):
            uses.append(Use(f"{name}:{getattr(node, 'lineno', 0)}", code, call, literal))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = _callee(node)
            for kw in node.keywords:
                if kw.arg in CODE_KEYWORDS:
                    add(node, kw.value, callee)
            if callee in CODE_CALLS or callee.endswith("Error"):
                for arg in node.args:
                    add(node, arg, callee)
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign | ast.AnnAssign) and "code" in _target_names(stmt):
                    add(stmt, stmt.value, node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            if any(t in CODE_KEYWORDS or "CODE" in t for t in _target_names(node)):
                add(node, node.value, "")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and PREFIXED.fullmatch(node.value)):
            uses.append(Use(f"{name}:{node.lineno}", node.value, "", True))
    return uses


def _source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                  if "migrations" not in p.parts and p != ROOT / TABLE)


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    found: list[Use] = []
    for path in _source_files():
        found += scan(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return found


def test_the_scan_sees_a_literal_code_in_every_place_a_code_goes() -> None:
    snippet = '''
class Boom(StateError):
    code = "BOOM_CLASS"
raise InputError("x", code="BOOM_KEYWORD")
raise DatabaseError("BOOM_POSITIONAL", "message")
errors.append(RowError("BOOM_ROW", 0, "", "m"))
rd.problem("GTFS_BOOM", "f.txt", 0, "", "m")
STATUS_BY_CODE = {"BOOM_STATUS": 404}
x = "TARIFF_BOOM"
raise InputError(f"HTTP_{status} is text", code=ErrorCode.INPUT_MISSING)
os.environ.get("TONGKA_DEBUG")
'''
    found = {u.code for u in scan(snippet, "snippet.py")}
    assert found == {"BOOM_CLASS", "BOOM_KEYWORD", "BOOM_POSITIONAL", "BOOM_ROW", "GTFS_BOOM",
                     "BOOM_STATUS", "TARIFF_BOOM", "INPUT_MISSING"}


def test_every_code_in_the_source_is_in_the_table(uses: list[Use]) -> None:
    assert len({u.code for u in uses}) > 100  # the scan reaches the packages
    unknown = [f"{u.where}: {u.code}" for u in uses if u.code not in ErrorCode.__members__]
    assert unknown == [], "add these codes to tariffs/error_codes.py"


def test_literal_codes_are_left_only_where_others_still_convert_them(uses: list[Use]) -> None:
    """Where the conversion is done, a code is an ``ErrorCode`` member, never a string."""
    converted = ("tariffs/", "readers/", "settlement/", "clearing/accept.py",
                 "clearing/batches.py", "clearing/db.py", "clearing/errors.py",
                 "clearing/input_files.py", "clearing/kernels.py", "clearing/sealed.py",
                 "clearing/withdraw.py", "tongka/cli.py", "tongka/ingest_files.py")
    literal = [f"{u.where}: {u.code}" for u in uses if u.literal and u.where.startswith(converted)]
    assert literal == []


# Which kind of failure a class is decides its exit code and its HTTP status (input 400,
# state 409): the table must say the same for every code raised through it.
CATEGORY = {"InputError": (2, 400), "StateError": (3, 409)}


def _families() -> dict[str, str]:
    """Each exception class of the product, mapped to InputError, StateError or itself."""
    bases: dict[str, list[str]] = {}
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]

    def family(name: str, depth: int = 0) -> str:
        if name in CATEGORY or depth > 20:
            return name
        for base in bases.get(name, []):
            found = family(base, depth + 1)
            if found in CATEGORY:
                return found
        return name

    return {name: family(name) for name in bases}


def test_raise_sites_agree_with_the_tables_exit_code_and_http_status(uses: list[Use]) -> None:
    pytest.importorskip("fastapi")
    from tongka.service.problems import STATUS_BY_CODE

    families = _families()
    wrong = []
    for u in uses:
        if u.code not in ErrorCode.__members__ or not u.call:
            continue
        member = ErrorCode[u.code]
        family = families.get(u.call, u.call)
        if family in CATEGORY:
            exit_code, http = CATEGORY[family]
            want = (exit_code, STATUS_BY_CODE.get(u.code, http))
            if (member.exit_code, member.http_status) != want:
                wrong.append(f"{u.where}: {u.code} via {u.call}: table says "
                             f"{(member.exit_code, member.http_status)}, the class {want}")
    assert wrong == []


def test_an_api_errors_status_is_its_codes_status() -> None:
    found = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and _callee(node) == "ApiError" and len(node.args) > 1
                    and isinstance(node.args[0], ast.Constant)):
                for code, _ in _codes_in(node.args[1]):
                    found.append((code, node.args[0].value, ErrorCode[code].http_status))
    assert found and [f for f in found if f[1] != f[2]] == []


def test_the_services_status_table_can_become_a_lookup_in_the_table() -> None:
    pytest.importorskip("fastapi")
    from tongka.service.problems import STATUS_BY_CODE

    assert {c: ErrorCode[c].http_status for c in STATUS_BY_CODE} == STATUS_BY_CODE


def test_a_class_that_keeps_its_own_exit_code_agrees_with_the_table() -> None:
    """Some classes still say ``exit_code = N`` (being converted elsewhere); it must match."""
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            own = {t: s.value for s in node.body if isinstance(s, ast.Assign)
                   for t in _target_names(s) if t in ("code", "exit_code")}
            if "exit_code" in own and "code" in own:
                codes = [c for c, _ in _codes_in(own["code"])]
                exits = {ErrorCode[c].exit_code for c in codes}
                assert exits == {ast.literal_eval(own["exit_code"])}, (path, node.name)


# --------------------------------------------------------------------------- the table


def test_every_member_is_named_by_its_code_and_fully_described() -> None:
    for c in ErrorCode:
        assert c.name == c.value and CODE_SHAPE.fullmatch(c) and len(c) > 2, c
        assert c.meaning and "\n" not in c.meaning and "|" not in c.meaning, c
        assert c.http_status is None or c.http_status in HTTP_STATUSES, c
        if c.kind is Kind.COMMAND:
            # only codes the service alone answers with (never raised) have no exit code
            assert c.exit_code in {1, 2, 3, 4} or c.group is Group.SERVICE, c
        elif c is not ErrorCode.UNKNOWN_LINE:  # also a pricing error: see the next test
            assert (c.exit_code, c.http_status) == (None, None), c
    assert [g for g in Group if not codes_of(g)] == []


def test_the_pricing_statuses_are_codes_that_stop_clear_with_exit_2() -> None:
    codes = [STATUS_NAMES[s] for s in STATUS_NAMES if s != OK]
    assert [error_code(c, command=True).exit_code for c in codes] == [2] * len(codes)


def test_the_row_codes_are_the_ones_the_engine_produces() -> None:
    assert [c.code for c in CHECKS] == list(codes_of(Group.ACCEPTANCE)) == list(CODES)
    assert set(PRICING_CODES.values()) <= set(CODES)
    assert READER_CODES == codes_of(Group.READER)
    assert ROW_CODES == set(codes_of(Group.ACCEPTANCE, Group.RESUBMIT, Group.READER))
    from tongka.cli import known_row_codes

    assert known_row_codes() == ROW_CODES


def test_a_member_is_its_code_to_every_reader() -> None:
    code = ErrorCode.INPUT_MISSING
    assert code == "INPUT_MISSING" and f"[{code}]" == "[INPUT_MISSING]" and str(code) == code
    assert json.dumps({"code": code}) == '{"code": "INPUT_MISSING"}'
    assert {"INPUT_MISSING": 1}[code] == 1


# --------------------------------------------------------------------------- the errors


def test_an_error_refuses_a_code_not_in_the_table() -> None:
    with pytest.raises(ValueError, match="tariffs/error_codes.py"):
        InputError("x", code="INPUT_TYPO")
    with pytest.raises(ValueError, match="cannot stop a command"):
        StateError("x", code="UNKNOWN_STOP")  # a row code
    with pytest.raises(ValueError, match="tariffs/error_codes.py"):
        type("Typo", (StateError,), {"code": "STATE_TYPO"})
    with pytest.raises(ValueError, match="not a row code"):
        RowError("INPUT_MISSING", 0, "", "a command code on a row")
    assert RowError("UNKNOWN_STOP", 0, "stop", "m").code is ErrorCode.UNKNOWN_STOP
    with pytest.raises(ValueError, match="not a tariff code"):
        TariffProblem("UNKNOWN_STOP", "f.toml", "-", "-", "a row code in a tariff problem")
    with pytest.raises(ValueError):
        GtfsProblem("GTFS_TYPO", "f.txt", 0, "", "m")


def test_the_exit_code_comes_from_the_table() -> None:
    assert InputError("x").exit_code == 2 and StateError("x").exit_code == 3
    assert TongkaError("x", code="LEDGER_MISMATCH").exit_code == 1
    assert StateError("x", code="BATCH_NOT_FOUND").code is ErrorCode.BATCH_NOT_FOUND
    assert TongkaError("x", code="UNKNOWN_LINE").exit_code == 2  # the pricing error


def test_tariff_errors_are_tongka_errors_with_their_problems_and_exit_codes() -> None:
    from tariffs.cli import EXIT_BAD_ARGUMENT, EXIT_INVALID

    problem = TariffProblem("TARIFF_SYNTAX", "wuhan.toml", "-", "-", "is not valid TOML")
    err = TariffError([problem])
    assert isinstance(err, TongkaError) and err.problems == [problem]
    assert (err.code, err.exit_code) == (ErrorCode.TARIFF_INVALID, EXIT_INVALID)
    assert str(err) == "wuhan.toml: version -: -: is not valid TOML [TARIFF_SYNTAX]"
    assert problem.code is ErrorCode.TARIFF_SYNTAX
    gtfs = GtfsError([GtfsProblem("GTFS_NO_FARE", "fare_leg_rules.txt", 2, "", "none")])
    assert isinstance(gtfs, TongkaError) and gtfs.exit_code == EXIT_BAD_ARGUMENT


# --------------------------------------------------------------------------- the page


def test_the_page_is_what_the_table_generates() -> None:
    gen = _load_generator()
    current = gen.DOC.read_text(encoding="utf-8")
    assert gen.render(current) == current, "run: python tools/gen_error_codes.py"


def test_the_page_lists_every_code_once_and_keeps_its_introduction() -> None:
    gen = _load_generator()
    page = gen.DOC.read_text(encoding="utf-8")
    intro, tables = page.split(gen.MARKER)
    listed = re.findall(r"^\| (?:\d+ \| )?`([A-Z0-9_]+)` \|", tables, re.M)
    assert sorted(listed) == sorted(ErrorCode.__members__)
    assert "Duplicates are not errors" in intro and intro.startswith("# Error codes")
    # the page is regenerated from any introduction, which it keeps as written
    assert gen.render("# Intro\n\nhand-written\n" + gen.MARKER) == (
        "# Intro\n\nhand-written\n\n" + gen.MARKER + "\n" + gen.generated())


# ------------------------------------------------------------------ one condition, one code


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_path_that_is_not_a_regular_file_has_one_code_even_if_it_changes_under_us(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INPUT_NOT_FILE, also when the path was a file at the first look and is a directory or a
    pipe by the time it is opened (it used to be INPUT_UNREADABLE then, or a hang)."""
    import os

    from clearing.input_files import read_input_bytes

    target = tmp_path / "batch.parquet"
    if kind == "directory":
        target.mkdir()
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes here")
        os.mkfifo(target)
    with pytest.raises(InputError) as plain:
        read_input_bytes(target)
    monkeypatch.setattr(Path, "is_file", lambda self: True)  # the look said "a file"
    with pytest.raises(InputError) as raced:
        read_input_bytes(target)
    assert plain.value.code == raced.value.code == ErrorCode.INPUT_NOT_FILE
