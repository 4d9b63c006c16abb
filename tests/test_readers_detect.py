"""Format detection from a batch's bytes, the format listing, and the readers' file guard.

A batch is read once and detected and parsed from the same bytes (issue #14); a corrupt
first record does not hide a whole file's format (issue #19): it becomes a row error.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import pytest

from clearing.errors import InputError
from clearing.ingest import MAX_BATCH_BYTES
from readers.codes import ROW_CODES
from readers.config import ReaderConfig
from readers.registry import (
    SNIFF_LINES,
    adapter_names,
    detect_format,
    detect_format_bytes,
    format_descriptions,
    get_adapter,
)
from tariffs.error_codes import ErrorCode
from tongka.testing.synth import sample_taps, write_raw

CONFIG = ReaderConfig.demo()
FORMATS = ("card", "nfc", "wearable", "ssc", "qr")
ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "docs" / "formats" / "README.md").read_text()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One file per format, several records each."""
    out = tmp_path_factory.mktemp("raw")
    taps = sample_taps(400, seed=3, day=dt.date(2026, 11, 24), issuers=(1, 2))
    by_format: dict[str, bytes] = {}
    for p in write_raw(taps, "all", out, CONFIG):
        fmt = p.name.split("-")[0]
        if len(p.read_bytes().splitlines()) > len(by_format.get(fmt, b"").splitlines()):
            by_format[fmt] = p.read_bytes()
    assert sorted(by_format) == sorted(FORMATS)
    return by_format


def corrupt(record: bytes) -> bytes:
    """A record damaged in transit: not UTF-8 from its first byte on."""
    return b"\xff\xfe\x00" + record[3:]


@pytest.mark.parametrize("fmt", FORMATS)
def test_detection_from_bytes_agrees_with_detection_from_the_file(
    fmt: str, files: dict[str, bytes], tmp_path: Path
) -> None:
    p = tmp_path / f"batch{get_adapter(fmt).suffix}"
    p.write_bytes(files[fmt])
    assert detect_format_bytes(files[fmt], name=p.name) == detect_format(p) == fmt


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("blank", [b"", b"\n", b"\r\n\n"])
def test_a_first_line_that_is_not_utf8_does_not_hide_the_format(
    fmt: str, blank: bytes, files: dict[str, bytes]
) -> None:
    first, rest = files[fmt].split(b"\n", 1)
    data = corrupt(first) + b"\n" + blank + rest
    assert detect_format_bytes(data, name="batch") == fmt
    r = get_adapter(fmt).parse_bytes(data, CONFIG, name="batch")
    (err,) = r.errors  # the bad first row quarantined, not the whole file refused
    assert err.row == 0 and err.raw == corrupt(first)
    assert r.taps.num_rows == len(files[fmt].splitlines()) - 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_several_bad_first_lines_are_looked_past(fmt: str, files: dict[str, bytes]) -> None:
    bad = b"\x80garbage\n" * (SNIFF_LINES - 1)
    assert detect_format_bytes(bad + files[fmt]) == fmt
    with pytest.raises(InputError) as err:  # but detection does not read a whole file of junk
        detect_format_bytes(bad + b"\x80more\n" + files[fmt])
    assert err.value.code == ErrorCode.FORMAT_UNKNOWN


@pytest.mark.parametrize(
    "content", [b"", b"\n\n", b"hello\n", b"\xff\xfe\n\x80\n", b"PAR1\x00\x00", b"SSC2|x\n"]
)
def test_what_no_format_claims_on_any_line_is_unknown(content: bytes) -> None:
    with pytest.raises(InputError) as err:
        detect_format_bytes(content, name="x")
    assert err.value.code == ErrorCode.FORMAT_UNKNOWN and "x:" in str(err.value)


def test_a_claimed_first_line_decides(files: dict[str, bytes]) -> None:
    # the first line decides when it is claimed: a later line of another format changes nothing
    data = files["card"].splitlines()[0] + b"\n" + files["ssc"]
    assert detect_format_bytes(data) == "card"


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p / "sub"])
def test_one_code_for_a_path_that_is_not_a_regular_file(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = make(tmp_path)
    target.mkdir(exist_ok=True)
    for call in (detect_format, lambda p: get_adapter("card").parse(p, CONFIG)):  # type: ignore[attr-defined]
        with pytest.raises(InputError) as err:
            call(target)
        assert err.value.code == ErrorCode.INPUT_NOT_FILE


def test_format_descriptions_list_every_format_in_order() -> None:
    names = format_descriptions()
    assert list(names) == adapter_names()
    for name, text in names.items():
        assert text and "\n" not in text and len(text) <= 100, name
        assert get_adapter(name).suffix in text, name


def test_the_adapters_do_not_import_the_writers() -> None:
    # Adapters parse; writers write: tongka.testing.synth imports the adapters, never the reverse.
    for path in sorted((ROOT / "readers").glob("*.py")):
        if path.name == "synth.py":
            continue
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "tongka.testing.synth" not in imported, path.name


def test_the_formats_page_names_the_codes_and_the_limit_the_code_has() -> None:
    rows = README.split("## Row error codes", 1)[1].split("\n## ", 1)[0]
    row_codes = set(re.findall(r"^\| `([A-Z_]+)` \|", rows, re.M))
    assert row_codes == set(ROW_CODES) - {ErrorCode.RECORD_EMPTY}
    stop = README.split("## Errors that stop the command", 1)[1].split("\n## ", 1)[0]
    file_codes = set(re.findall(r"^\| `([A-Z_]+)` \|", stop, re.M))
    assert ErrorCode.INPUT_NOT_FILE in file_codes and ErrorCode.INPUT_UNREADABLE not in file_codes
    assert MAX_BATCH_BYTES == 1 << 30 and "1 GiB" in stop
    assert "8 GiB" not in README
    sources = "".join(
        p.read_text()
        for p in [*(ROOT / "readers").glob("*.py"), ROOT / "clearing" / "input_files.py"]
    )
    for code in file_codes - {ErrorCode.READER_CONFIG}:
        assert f"ErrorCode.{code}" in sources, code
