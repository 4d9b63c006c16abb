"""Decode the next chunks on a second thread while the caller works on the current one.

Reading stored Parquet (pyarrow) and hashing or probing keys (numba) both release the GIL, so
side by side they take the longer of the two instead of the sum. Used where a whole day's
stored keys are streamed: de-duplication's key index (``clearing.tapstore``) and the replay
lookback (``clearing.risk_store``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")


def read_ahead(chunks: Iterable[T], *, depth: int, name: str) -> Generator[T, None, None]:
    """``chunks`` produced on a thread named ``name``, at most ``depth`` waiting.

    An error in the producer is raised here, at the point the caller would have met it; a
    caller that stops early (closes the generator, or raises) stops the producer at its next
    chunk and joins it, so no thread outlives the iteration.
    """
    # a chunk, the producer's error, or None when the chunks are done
    ready: queue.Queue[tuple[T] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        ready.put((chunk,), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(None)
        except BaseException as error:  # handed to the caller, raised there
            ready.put(error)

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item[0]
    finally:
        stop.set()
        while producer.is_alive():  # unblock a producer waiting on a full queue, then join it
            try:
                ready.get_nowait()
            except queue.Empty:
                producer.join(timeout=0.1)
