"""The adapter registry: names, format detection, plugins from the tongka.readers entry points."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from clearing.errors import InputError
from readers.base import Adapter
from readers.config import ReaderConfig
from readers.registry import ENTRY_POINT_GROUP, adapter_names, detect_format, get_adapter
from tariffs.error_codes import ErrorCode
from tongka.testing.raw_writers import WRITERS, RawWriter
from tongka.testing.synth import sample_taps, write_raw

CONFIG = ReaderConfig.demo()


def test_builtins_are_adapters_and_have_writers() -> None:
    for name in ("card", "nfc", "wearable", "ssc", "qr"):
        a = get_adapter(name)
        assert isinstance(a, Adapter) and a.name == name
        writer: RawWriter = WRITERS[name]  # readers parse; tongka.testing.raw_writers writes
        assert not hasattr(a, "render") and callable(writer.render)
    assert set(WRITERS) == {"card", "nfc", "wearable", "ssc", "qr"}


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(InputError) as err:
        get_adapter("punchcard")
    assert err.value.code == ErrorCode.FORMAT_UNKNOWN and "card, nfc, wearable, ssc, qr" in str(
        err.value
    )


def test_detection_finds_each_format(tmp_path: Path) -> None:
    paths = write_raw(sample_taps(300, seed=1, day=dt.date(2026, 11, 24)), "all", tmp_path, CONFIG)
    for p in paths:
        assert detect_format(p) == p.name.split("-")[0]


@pytest.mark.parametrize(
    "content", [b"", b"\n\n", b"hello\n", b"PAR1\x00\x00", b'{"a": 1}\n', b"SSC2|x\n"]
)
def test_detection_refuses_what_no_format_claims(content: bytes, tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(content)
    with pytest.raises(InputError) as err:
        detect_format(p)
    assert err.value.code == ErrorCode.FORMAT_UNKNOWN


def test_detection_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        detect_format(tmp_path / "nope")
    assert err.value.code == ErrorCode.INPUT_MISSING


def test_parse_of_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    for path, code in (
        (tmp_path / "nope", ErrorCode.INPUT_MISSING),
        (tmp_path, ErrorCode.INPUT_NOT_FILE),
    ):
        with pytest.raises(InputError) as err:
            get_adapter("card").parse(path, CONFIG)
        assert err.value.code == code


PLUGIN = """
from clearing.taps import empty_taps
from readers.base import ParseResult, result
from tariffs.vocab import Media


class PunchAdapter:
    name = "punch"
    media = (Media.CARD,)
    suffix = ".punch"

    def sniff(self, head):
        return head.startswith(b"PUNCH")

    def parse_bytes(self, data, config, *, name=""):
        return result(empty_taps(), [], 0, [])


class NotAnAdapter:
    pass
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution declaring readers: one good, one broken, one stealing 'card'."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "punch_reader.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "punch_reader-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: punch-reader\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "punch = punch_reader:PunchAdapter\n"
        "broken = punch_reader:NotAnAdapter\n"
        "missing = punch_reader_gone:Adapter\n"
        "card = punch_reader:PunchAdapter\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_plugins_are_listed_after_the_builtins(plugin: Path) -> None:
    names = adapter_names()
    assert names[:5] == ["card", "nfc", "wearable", "ssc", "qr"]
    assert names[5:] == ["broken", "missing", "punch"]
    assert names.count("card") == 1


def test_a_plugin_is_loaded_and_used(plugin: Path, tmp_path: Path) -> None:
    f = tmp_path / "deck.punch"
    f.write_bytes(b"PUNCH 1\n")
    assert detect_format(f) == "punch"
    r = get_adapter("punch").parse_bytes(f.read_bytes(), CONFIG, name=f.name)
    assert r.rows == 0 and type(get_adapter("punch")).__name__ == "PunchAdapter"


def test_a_plugin_cannot_replace_a_builtin(plugin: Path) -> None:
    assert type(get_adapter("card")).__name__ == "CardAdapter"


@pytest.mark.parametrize("name", ["broken", "missing"])
def test_a_broken_plugin_is_an_input_error(plugin: Path, name: str) -> None:
    with pytest.raises(InputError) as err:
        get_adapter(name)
    assert err.value.code == ErrorCode.FORMAT_PLUGIN and name in str(err.value)


def test_a_broken_plugin_does_not_break_detection(plugin: Path, tmp_path: Path) -> None:
    paths = write_raw(sample_taps(20, seed=1, media=(0,), issuers=(1,)), "card", tmp_path, CONFIG)
    assert paths and all(detect_format(p) == "card" for p in paths)
