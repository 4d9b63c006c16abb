"""Scale-out: price a day's taps per partition of cards on a dask.distributed cluster.

Taps partition cleanly by card (ARCHITECTURE: Scale): a card's day never needs another card's
taps, and chains, caps and transfers are all per card-day. So every worker runs the same fast
path on its cards, and the leg tables concatenate; sorted by the canonical leg order they are
identical to a single-process run (``tests/test_partition.py`` proves it). Settlement then
works on the whole day's legs as usual.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from clearing.legs import sort_legs
from tariffs.load import TariffSet

# Fibonacci hashing constant: spreads consecutive issuer codes across partitions.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def card_partitions(card_id: np.ndarray, issuer: np.ndarray, n: int) -> np.ndarray:
    """The partition (0..n-1) of each tap's card ``(issuer, card_id)``; stable across runs."""
    if n < 1:
        raise ValueError("the number of partitions must be at least 1")
    mixed = card_id.astype(np.uint64) ^ (issuer.astype(np.uint64) * _GOLDEN)
    return (mixed % np.uint64(n)).astype(np.int64)


def split_by_card(taps: pa.Table, n: int) -> list[pa.Table]:
    """``n`` tables holding every tap once, each card wholly in one of them."""
    part = card_partitions(taps.column("card_id").to_numpy(), taps.column("issuer").to_numpy(), n)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n + 1))
    return [taps.take(pa.array(order[bounds[i] : bounds[i + 1]])) for i in range(n)]


def _price_partition(taps: pa.Table, tariffs: TariffSet) -> pa.Table:
    from clearing.fast import match_and_price_fast

    return match_and_price_fast(taps, tariffs)


def match_and_price_partitioned(
    taps: pa.Table,
    tariffs: TariffSet,
    client,
    partitions: int,  # type: ignore[no-untyped-def]
) -> pa.Table:
    """Price ``taps`` on a dask.distributed ``client``, ``partitions`` card partitions at once.

    The tariff set is scattered once to every worker; each partition is priced by the numba
    fast path there (its kernels come from the on-disk cache, so workers compile nothing
    after the first run).
    """
    parts = [p for p in split_by_card(taps, partitions) if p.num_rows]
    if not parts:
        return _price_partition(taps, tariffs)
    shared = client.scatter(tariffs, broadcast=True)
    futures = client.map(_price_partition, parts, tariffs=shared, pure=False)
    tables = client.gather(futures)
    return sort_legs(pa.concat_tables(tables))


def local_client(workers: int):  # type: ignore[no-untyped-def]
    """A dask.distributed client on a cluster of ``workers`` local processes (one thread each)."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster)
