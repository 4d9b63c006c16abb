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
from readers.base import Adapter

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "tongka.readers"
SNIFF_BYTES = 64 * 1024


def _builtins() -> dict[str, Callable[[], Adapter]]:  # the order is detection's and listing's
    from readers.card import CardAdapter
    from readers.nfc import NfcAdapter
    from readers.qr import QrAdapter
    from readers.ssc import SocialSecurityAdapter
    from readers.wearable import WearableAdapter

    makers: dict[str, Callable[[], Adapter]] = {
        "card": CardAdapter,
        "nfc": NfcAdapter,
        "wearable": WearableAdapter,
        "ssc": SocialSecurityAdapter,
        "qr": QrAdapter,
    }
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
            f"{ep.value} is not a reader adapter (needs name, media, suffix, sniff, parse)"
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
            code="FORMAT_UNKNOWN",
        )
    try:
        return _load_plugin(ep)
    except Exception as exc:  # a broken plugin is the plugin's problem, reported, never a crash
        raise InputError(
            f"reader plugin {name!r} ({ep.value}) failed to load: {exc}", code="FORMAT_PLUGIN"
        ) from None


def detect_format(path: Path) -> str:
    """The one format whose ``sniff`` accepts the file's first bytes, or InputError.

    FORMAT_UNKNOWN when none does (and for Parquet, which is not a raw reader format),
    FORMAT_AMBIGUOUS when several do.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", code="INPUT_MISSING") from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({exc.strerror})", code="INPUT_UNREADABLE"
        ) from None
    hits = []
    for name in adapter_names():
        try:
            adapter = get_adapter(name)
            if adapter.sniff(head):
                hits.append(name)
        except InputError as exc:
            log.warning("%s", exc)
        except Exception as exc:  # a plugin's sniff must not break detection of the others
            log.warning("reader format %r could not sniff %s: %s", name, path.name, exc)
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(
            f"{path}: not a known reader format; name one with --format "
            f"({', '.join(adapter_names())})",
            code="FORMAT_UNKNOWN",
        )
    raise InputError(
        f"{path}: looks like several formats ({', '.join(hits)}); name one with --format",
        code="FORMAT_AMBIGUOUS",
    )
