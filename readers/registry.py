"""The adapters by name: the built-in five and plugins of the ``tongka.readers`` entry points.

A plugin package declares, in its own pyproject.toml::

    [project.entry-points."tongka.readers"]
    myformat = "my_package.reader:MyAdapter"

where the object is an ``Adapter`` instance or a class whose instances are. Built-in names
win over plugins of the same name (a plugin cannot silently replace how cards are read); a
plugin that fails to load is skipped with a warning and named when asked for directly.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path

from clearing.errors import InputError
from clearing.input_files import read_input_bytes
from readers.base import Adapter
from readers.card import CardAdapter
from readers.names import BUILTIN_FORMATS
from readers.nfc import NfcAdapter
from readers.qr import QrAdapter
from readers.ssc import SocialSecurityAdapter
from readers.wearable import WearableAdapter
from tariffs.error_codes import ErrorCode

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tongka.readers"
SNIFF_BYTES = 64 * 1024  # detection looks no further into a file
SNIFF_LINES = 64  # nor past this many lines, when the first ones belong to no format


def _builtins() -> dict[str, Callable[[], Adapter]]:  # the order is detection's and listing's
    makers: dict[str, Callable[[], Adapter]] = {
        "card": CardAdapter,
        "nfc": NfcAdapter,
        "wearable": WearableAdapter,
        "ssc": SocialSecurityAdapter,
        "qr": QrAdapter,
    }
    assert tuple(makers) == BUILTIN_FORMATS, "readers.names lists the built-ins in this order"
    return makers


@cache
def _builtin_adapters() -> dict[str, Adapter]:
    return {name: make() for name, make in _builtins().items()}


def _plugin_entry_points() -> dict[str, md.EntryPoint]:
    found: dict[str, md.EntryPoint] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _builtins():
            if ep.value.split(":")[0].startswith("readers."):
                continue  # the built-ins declared as entry points: the same adapters
            log.warning(
                "reader plugin %r (%s) ignored: a built-in format has that name", ep.name, ep.value
            )
            continue
        found.setdefault(ep.name, ep)
    return found


def _load_plugin(ep: md.EntryPoint) -> Adapter:
    obj = ep.load()
    adapter = obj() if isinstance(obj, type) else obj
    if not isinstance(adapter, Adapter):
        raise TypeError(
            f"{ep.value} is not a reader adapter (needs name, media, suffix, sniff, parse_bytes)"
        )
    return adapter


def adapter_names() -> list[str]:
    """Every format name: the built-ins in their fixed order, then plugins sorted by name."""
    return list(_builtins()) + sorted(_plugin_entry_points())


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; InputError FORMAT_UNKNOWN naming the choices if none."""
    builtin = _builtin_adapters().get(name)
    if builtin is not None:
        return builtin
    ep = _plugin_entry_points().get(name)
    if ep is None:
        raise InputError(
            f"unknown reader format {name!r} (one of: {', '.join(adapter_names())})",
            code=ErrorCode.FORMAT_UNKNOWN,
        )
    try:
        return _load_plugin(ep)
    except Exception as exc:  # a broken plugin is the plugin's problem, reported, never a crash
        raise InputError(
            f"reader plugin {name!r} ({ep.value}) failed to load: {exc}",
            code=ErrorCode.FORMAT_PLUGIN,
        ) from None


def format_descriptions() -> dict[str, str]:
    """Every format name with one line saying what it reads (for ``--help`` texts), in
    ``adapter_names`` order; a plugin without a ``description`` is described by its
    docstring's first line, one that fails to load says so."""
    out = {}
    for name in adapter_names():
        try:
            adapter = get_adapter(name)
        except InputError:
            out[name] = "(plugin that failed to load)"
            continue
        text = getattr(adapter, "description", None) or (type(adapter).__doc__ or "").strip()
        out[name] = text.splitlines()[0].strip() if text else "(no description)"
    return out


def detect_format_bytes(data: bytes, *, name: str = "") -> str:
    """The one format whose ``sniff`` accepts the file's bytes, or InputError.

    Each adapter first sniffs the start of the file. A corrupt first record (a line that is
    not UTF-8, a truncated record) must not hide the format of a whole file (issue #19):
    when no format claims the start, the bytes from each following line on are tried, up
    to ``SNIFF_LINES`` lines into the first ``SNIFF_BYTES``, and the first line some format
    claims decides. The lines skipped are parsed like any other, so the bad one is a row
    error, not a refused file. FORMAT_UNKNOWN when no format claims any of those lines (and
    for Parquet, which is not a raw reader format), FORMAT_AMBIGUOUS when several claim the
    same one. ``name`` (the file's name) is only used in messages.
    """
    head = bytes(data[:SNIFF_BYTES])
    label = name or "the file"
    sniffers = _sniffers()
    for start in _line_starts(head):
        hits = _claims(sniffers, head[start:], label)
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise InputError(
                f"{label}: looks like several formats ({', '.join(hits)}); name one with --format",
                code=ErrorCode.FORMAT_AMBIGUOUS,
            )
    raise InputError(
        f"{label}: not a known reader format; name one with --format "
        f"({', '.join(adapter_names())})",
        code=ErrorCode.FORMAT_UNKNOWN,
    )


def detect_format(path: Path) -> str:
    """``detect_format_bytes`` of a file, read through the one input guard (for tests, tools).

    The command line reads a batch once and detects from those bytes; this reads the file.
    """
    path = Path(path)
    return detect_format_bytes(read_input_bytes(path), name=path.name)


def _line_starts(head: bytes) -> list[int]:
    """Offsets of the first ``SNIFF_LINES`` lines of ``head`` with content (0 always first)."""
    starts = [0]
    pos = head.find(b"\n")
    while pos >= 0 and len(starts) < SNIFF_LINES:
        nxt = pos + 1
        pos = head.find(b"\n", nxt)
        line = head[nxt:] if pos < 0 else head[nxt:pos]
        if line.strip(b"\r"):  # a blank line cannot change the answer
            starts.append(nxt)
    return starts


def _sniffers() -> dict[str, Adapter]:
    """Every adapter that loads; a plugin that does not is skipped with a warning."""
    out = {}
    for name in adapter_names():
        try:
            out[name] = get_adapter(name)
        except InputError as exc:
            log.warning("%s", exc)
    return out


def _claims(sniffers: dict[str, Adapter], head: bytes, label: str) -> list[str]:
    """The formats whose ``sniff`` accepts ``head``; one whose sniff raises is dropped."""
    hits = []
    for name, adapter in list(sniffers.items()):
        try:
            if adapter.sniff(head):
                hits.append(name)
        except Exception as exc:  # a plugin's sniff must not break detection of the others
            log.warning("reader format %r could not sniff %s: %s", name, label, exc)
            del sniffers[name]
    return hits
