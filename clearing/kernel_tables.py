"""The compiled tariff tables as the kernels take them: one typed tuple of read-only numpy arrays.

``tariffs.compile.compile_tariffs`` owns the tables (dense ids, fare matrices, product prices,
transfer steps, caps, version ranges); this module only picks the arrays the matching and
pricing kernels read and passes them as one ``KernelTables`` namedtuple, so that a kernel has one
argument for all of them and numba compiles (and caches) one signature.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from tariffs.compile import CompiledTariffs, compile_tariffs
from tariffs.load import TariffSet


class KernelTables(NamedTuple):
    """What the kernels read, by the names and shapes of ``tariffs.compile.CompiledTariffs``."""

    operator_index: np.ndarray  # int32[max operator + 1]: raw operator -> dense o, or -1
    line_index: np.ndarray  # int32[O, max line + 1]: (o, raw line) -> dense l, or -1
    line_mode: np.ndarray  # int8[L]
    line_network: np.ndarray  # int32[L]: dense network, -1 for a flat line
    line_area: np.ndarray  # int32[L]: dense tariff area
    area_codes: np.ndarray  # int64[A]: GB/T 2260 code of each dense area
    network_codes: np.ndarray  # int64[N]: raw network id of each dense network
    issuer_index: np.ndarray  # int32[max issuer + 1]: raw issuer -> dense i, or -1
    stop_index: np.ndarray  # int32[max stop + 1]: raw stop -> dense s, or -1
    network_stop_pos: np.ndarray  # int32[N, S]: position of stop s in network n's matrix, or -1
    area_version_start: np.ndarray  # int32[A]: area a's versions are [start, stop)
    area_version_stop: np.ndarray  # int32[A]
    version_valid_from: np.ndarray  # int32[V]: day number; also the leg's ``version`` field
    apportionment: np.ndarray  # int8[V]
    line_fare: np.ndarray  # int64[V, L]: flat fare, -1 where the line has none
    fare_table: np.ndarray  # int32[V, N]: fare table t of network n in version v, or -1
    fare_matrix: np.ndarray  # int64[T, Z, Z]: base fares by stop position (diagonal: same station)
    fare_max: np.ndarray  # int64[T]
    fare_same_station: np.ndarray  # int64[T]
    fare_max_journey_ms: np.ndarray  # int64[T]
    accepted: np.ndarray  # bool[V, I]
    concession: np.ndarray  # bool[V, I]
    visitor_rate_bp: np.ndarray  # int64[V]
    price_kind: np.ndarray  # int8[V, M, P]: -1 none, 0 rate, 1 fixed (ORDINARY fallback applied)
    price_value: np.ndarray  # int64[V, M, P]
    transfer_steps: np.ndarray  # int32[V]: 0 when the version has no transfer rule
    transfer_window_ms: np.ndarray  # int64[V]
    transfer_from_first: np.ndarray  # bool[V]
    transfer_allowed: np.ndarray  # bool[V, M, M]
    step_kind: np.ndarray  # int8[V, K]
    step_value: np.ndarray  # int64[V, K]
    cap_fen: np.ndarray  # int64[V, P]: -1 uncapped


def tables_from_compiled(ct: CompiledTariffs) -> KernelTables:
    """The kernels' view of compiled tables (contiguous arrays, no copy when already so)."""
    return KernelTables(**{
        name: np.ascontiguousarray(getattr(ct, name)) for name in KernelTables._fields
    })


@lru_cache(maxsize=16)
def kernel_tables(tariffs: TariffSet) -> KernelTables:
    """The kernel tables of a loaded tariff set (cached: a set is compared by identity)."""
    return tables_from_compiled(compile_tariffs(tariffs))
