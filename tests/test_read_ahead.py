"""clearing.read_ahead: the chunks in order, the producer's error where the caller meets it,
and no thread left behind when the caller stops early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearing.read_ahead import read_ahead


def _alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


@given(st.lists(st.integers()), st.integers(1, 4))
def test_chunks_come_in_order(chunks: list[int], depth: int) -> None:
    assert list(read_ahead(iter(chunks), depth=depth, name="ra-order")) == chunks
    assert not _alive("ra-order")


def test_the_producers_error_is_raised_after_the_chunks_before_it() -> None:
    def chunks() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("broken file")

    got: list[int] = []
    with pytest.raises(ValueError, match="broken file"):
        for chunk in read_ahead(chunks(), depth=1, name="ra-error"):
            got.append(chunk)
    assert got == [1, 2]
    assert not _alive("ra-error")


def test_a_caller_stopping_early_stops_the_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    chunks = read_ahead(endless(), depth=2, name="ra-stop")
    assert next(chunks) == 0
    chunks.close()
    assert not _alive("ra-stop")
    assert len(produced) <= 5  # the producer stopped within its queue's depth, not at the end
