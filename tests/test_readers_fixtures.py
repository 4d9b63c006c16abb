"""The sample files of each raw format (tests/fixtures/readers, documented in docs/formats):
detected, parsed, each planted bad record quarantined with the code written beside it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from readers.config import ReaderConfig
from readers.registry import detect_format, get_adapter

HERE = Path(__file__).resolve().parent / "fixtures" / "readers"
EXPECTED = json.loads((HERE / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_file(name: str) -> None:
    want = EXPECTED[name]
    path = HERE / name
    assert detect_format(path) == want["format"]
    r = get_adapter(want["format"]).parse(path, ReaderConfig.demo())
    assert r.taps.num_rows == want["taps"]
    got = [{"row": e.row, "code": e.code, "field": e.field} for e in r.errors]
    assert got == [{k: e[k] for k in ("row", "code", "field")} for e in want["errors"]]


def test_sample_files_are_what_the_script_builds() -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", HERE / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files, expected = module.build()
    assert expected == EXPECTED
    for name, data in files.items():
        assert (HERE / name).read_bytes() == data, f"{name}: run make_fixtures.py"
