"""Compile a validated ``TariffSet`` into numpy lookup tables for the numba kernels (SPEC §6).

The kernels never see a pydantic model: they index these arrays with small dense integers.
Raw registry codes (operator, issuer, stop; a line is (operator, line)) become dense indices
through the ``*_index`` lookup arrays, where -1 means "not in the registry". Tariff versions of
every area are numbered densely too, in (area, valid_from) order, so that every per-version
table has the version as its first axis.

Everything the kernels need to price a leg is here, already resolved: base fares of every
ordered stop pair (distance bands evaluated over the shortest-path metres, or the matrix),
product prices with the ORDINARY fallback applied (by ``tariffs.fares.price_for``, the model
tier's own), transfer steps, caps and the apportionment mode; nothing else, and nothing only a
test reads. The kernels read them with ``tariffs.rules``' primitives, the functions
``tariffs.fares`` prices the models with; ``tests/test_tariff_compile.py`` reads the tables the
same way and proves they price as ``tariffs.fares`` does. Funders and fee rates are not
compiled (settlement reads them off the models), nor are monthly rebates: month close applies
``tariffs.fares``' rebate rules directly, once per card and month (SPEC §6, v1.2).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from tariffs import rules
from tariffs.fares import price_args, price_for, transfer_step_args
from tariffs.load import TariffSet
from tariffs.model import NetworkFare, TariffVersion
from tariffs.registry import FLAT, Registry
from tariffs.vocab import Apportionment, Mode, Product

NO_INDEX = -1  # a raw code with no dense index, a table that does not exist, an unpriced line
NO_CAP = rules.NO_CAP  # cap_fen of a product that has no daily cap (the rule's own sentinel)
NO_FARE = -1  # padding of fare_matrix and line_fare where no fare exists
N_MODES = len(Mode)
N_PRODUCTS = len(Product)
EPOCH = dt.date(1970, 1, 1)


class PriceKind(enum.IntEnum):
    """How a product price turns a base fare into the step-3 fare (SPEC §6.3), as ``price_kind``
    holds it; ``tariffs.rules.product_price_fare`` prices them."""

    NONE = rules.PRICE_NONE  # -1, no price: the area does not run this mode
    RATE = rules.PRICE_RATE  # apply_rate(base, value)
    FIXED = rules.PRICE_FIXED  # min(base, value)


class StepKind(enum.IntEnum):
    """Transfer step kinds (SPEC §6.4) as ``step_kind`` holds them; ``step_value`` holds the
    step's argument. ``tariffs.rules.transfer_step_fare`` prices them."""

    FREE = rules.STEP_FREE  # 0
    OFF_FEN = rules.STEP_OFF_FEN  # max(0, f - value)
    PAY_RATE = rules.STEP_PAY_RATE  # min(f, apply_rate(base, 10000 - value)): pays value bp
    DIFFERENCE = rules.STEP_DIFFERENCE  # max(0, f - previous leg's step-3 fare): 扣高免低


@dataclass(frozen=True, eq=False)
class CompiledTariffs:
    """A tariff set as read-only numpy arrays. Shapes use these sizes:

    A areas, V versions (all areas), O operators, L lines, S stops, N networks, I issuers,
    M = len(Mode) = 4, P = len(Product) = 5, T fare tables (one per version and network it
    prices), K = the longest step list (at least 1), Z = the largest network's stop count.
    """

    # -- dense ids and lookups from raw codes ------------------------------------------------
    area_codes: np.ndarray  # int64[A]: GB/T 2260 code of dense area a, ascending
    operator_index: np.ndarray  # int32[max operator code + 1]: raw code -> o, or -1
    operator_area: np.ndarray  # int32[O]: dense area (the operator's city) of operator o
    issuer_index: np.ndarray  # int32[max issuer code + 1]: raw code -> i, or -1
    network_codes: np.ndarray  # int64[N]: raw network id of dense network n, ascending
    line_index: np.ndarray  # int32[O, max line id + 1]: (dense operator, raw line) -> l, or -1
    line_mode: np.ndarray  # int8[L]: Mode of line l
    line_network: np.ndarray  # int32[L]: dense network of line l, -1 for a flat line
    line_area: np.ndarray  # int32[L]: dense tariff area of line l (its operator's city)
    stop_index: np.ndarray  # int32[max stop id + 1]: raw stop id -> s, or -1
    stop_city: np.ndarray  # int64[S]: GB/T 2260 code of the city stop s lies in
    network_stop_pos: np.ndarray  # int32[N, S]: row/column of stop s in network n's matrix, or -1

    # -- versions by service day ---------------------------------------------------------------
    version_area: np.ndarray  # int32[V]: dense area of version v
    version_valid_from: np.ndarray  # int32[V]: first service day (days since 1970-01-01)
    area_version_start: np.ndarray  # int32[A]: area a's versions are v in [start, stop),
    area_version_stop: np.ndarray  # int32[A]:   in ascending valid_from

    # -- step 1: base fares --------------------------------------------------------------------
    line_fare: np.ndarray  # int64[V, L]: flat fare of line l in version v; -1 if not flat there
    fare_table: np.ndarray  # int32[V, N]: fare table t of network n in version v, or -1
    fare_matrix: np.ndarray  # int64[T, Z, Z]: base fare from stop position i to j; the
    #                          diagonal is same_station_fare; -1 beyond the network's size
    fare_max: np.ndarray  # int64[T]: max_fare, what every penalty leg computes
    fare_same_station: np.ndarray  # int64[T]: same_station_fare (also on the diagonal)
    fare_max_journey_ms: np.ndarray  # int64[T]: max_journey_minutes * 60000

    # -- steps 2-3: honoured product and product price -----------------------------------------
    accepted: np.ndarray  # bool[V, I]: issuer i is in accepted_issuers
    concession: np.ndarray  # bool[V, I]: issuer i is in concession_issuers (subset of accepted)
    visitor_rate_bp: np.ndarray  # int64[V]: rate for cards of issuers not accepted
    price_kind: np.ndarray  # int8[V, M, P]: PriceKind, ORDINARY's where P has no price of its own
    price_value: np.ndarray  # int64[V, M, P]: rate in bp (RATE) or fare in fen (FIXED)

    # -- step 4: transfers ---------------------------------------------------------------------
    transfer_steps: np.ndarray  # int32[V]: max_transfers = len(steps); 0 when no rule
    transfer_window_ms: np.ndarray  # int64[V]: window_minutes * 60000 (inclusive); 0 if no rule
    transfer_from_first: np.ndarray  # bool[V]: window_from = first_boarding, else previous_last_tap
    transfer_allowed: np.ndarray  # bool[V, M, M]: (previous leg's mode, this mode) may transfer
    step_kind: np.ndarray  # int8[V, K]: StepKind of the k-th transfer at [v, k - 1]
    step_value: np.ndarray  # int64[V, K]: off_fen's fen, pay_rate's bp, else 0

    # -- step 5 and apportionment --------------------------------------------------------------
    cap_fen: np.ndarray  # int64[V, P]: daily cap of honoured product p, NO_CAP = uncapped
    apportionment: np.ndarray  # int8[V]: Apportionment of chains whose first leg v priced


@lru_cache(maxsize=16)
def compile_tariffs(tariffs: TariffSet) -> CompiledTariffs:
    """The lookup tables of a loaded tariff set (cached per set: a set is compared by identity)."""
    reg = tariffs.registry
    areas = sorted(set(reg.cities) | set(tariffs.tariffs))
    area_ix = {a: i for i, a in enumerate(areas)}
    operators = sorted(reg.operators)
    op_ix = {o: i for i, o in enumerate(operators)}
    issuers = sorted(reg.issuers)
    iss_ix = {c: i for i, c in enumerate(issuers)}
    networks = sorted(reg.networks)
    net_ix = {n: i for i, n in enumerate(networks)}
    lines = sorted(reg.lines)
    line_ix = {k: i for i, k in enumerate(lines)}
    stops = sorted(reg.stops)
    stop_ix = {s: i for i, s in enumerate(stops)}

    network_stop_pos = np.full((len(networks), len(stops)), NO_INDEX, dtype=np.int32)
    for n, nid in enumerate(networks):
        for pos, s in enumerate(reg.networks[nid].stops):
            network_stop_pos[n, stop_ix[s]] = pos
    max_line = max((k[1] for k in lines), default=0)
    line_index = np.full((len(operators), max_line + 1), NO_INDEX, dtype=np.int32)
    for i, (op, ln) in enumerate(lines):
        line_index[op_ix[op], ln] = i

    versions: list[tuple[int, TariffVersion]] = []  # (area, version) in dense version order
    area_start = np.zeros(len(areas), dtype=np.int32)
    area_stop = np.zeros(len(areas), dtype=np.int32)
    for a, area in enumerate(areas):
        area_start[a] = len(versions)
        tariff = tariffs.tariffs.get(area)
        versions.extend((area, v) for v in (tariff.versions if tariff else []))
        area_stop[a] = len(versions)
    n_v = len(versions)
    valid_from = np.array([(v.valid_from - EPOCH).days for _, v in versions], dtype=np.int32)

    max_steps = max([len(v.transfer.steps) for _, v in versions if v.transfer] + [1])
    tables: list[NetworkFare] = []
    fare_table = np.full((n_v, len(networks)), NO_INDEX, dtype=np.int32)
    out = _Tables(n_v, len(lines), len(issuers), max_steps)
    for vi, (_area, v) in enumerate(versions):
        for lf in v.line_fares:
            keys = ([(lf.operator, n) for n in lf.lines] if lf.lines is not None else
                    [k for k in lines if k[0] == lf.operator and reg.lines[k].network == FLAT])
            for key in keys:
                out.line_fare[vi, line_ix[key]] = lf.fare_fen
        for nf in v.networks:
            fare_table[vi, net_ix[nf.network]] = len(tables)
            tables.append(nf)
        _compile_version(out, vi, v, iss_ix)

    size = max([len(reg.networks[nf.network].stops) for nf in tables] + [1])
    fare_matrix = np.full((len(tables), size, size), NO_FARE, dtype=np.int64)
    for t, nf in enumerate(tables):
        n = len(reg.networks[nf.network].stops)
        fare_matrix[t, :n, :n] = network_fare_matrix(reg, nf)

    compiled = CompiledTariffs(
        area_codes=np.array(areas, dtype=np.int64),
        operator_index=_index_array(operators),
        operator_area=np.array([area_ix[reg.operators[o].city] for o in operators], np.int32),
        issuer_index=_index_array(issuers),
        network_codes=np.array(networks, dtype=np.int64),
        line_index=line_index,
        line_mode=np.array([int(reg.lines[k].mode) for k in lines], dtype=np.int8),
        line_network=np.array([net_ix.get(reg.lines[k].network, NO_INDEX) for k in lines],
                              dtype=np.int32),
        line_area=np.array([area_ix[reg.operators[k[0]].city] for k in lines], dtype=np.int32),
        stop_index=_index_array(stops),
        stop_city=np.array([reg.stops[s].city for s in stops], dtype=np.int64),
        network_stop_pos=network_stop_pos,
        version_area=np.array([area_ix[a] for a, _ in versions], dtype=np.int32),
        version_valid_from=valid_from,
        area_version_start=area_start,
        area_version_stop=area_stop,
        line_fare=out.line_fare,
        fare_table=fare_table,
        fare_matrix=fare_matrix,
        fare_max=np.array([nf.max_fare for nf in tables], dtype=np.int64),
        fare_same_station=np.array([nf.same_station_fare for nf in tables], dtype=np.int64),
        fare_max_journey_ms=np.array([nf.max_journey_minutes * 60_000 for nf in tables],
                                     dtype=np.int64),
        accepted=out.accepted,
        concession=out.concession,
        visitor_rate_bp=np.array([v.visitor_rate_bp for _, v in versions], dtype=np.int64),
        price_kind=out.price_kind,
        price_value=out.price_value,
        transfer_steps=out.transfer_steps,
        transfer_window_ms=out.transfer_window_ms,
        transfer_from_first=out.transfer_from_first,
        transfer_allowed=out.transfer_allowed,
        step_kind=out.step_kind,
        step_value=out.step_value,
        cap_fen=out.cap_fen,
        apportionment=np.array([Apportionment[v.apportionment.upper()] for _, v in versions],
                               dtype=np.int8),
    )
    for f in fields(compiled):
        getattr(compiled, f.name).flags.writeable = False  # shared by every kernel call
    return compiled


def network_fare_matrix(reg: Registry, nf: NetworkFare) -> np.ndarray:
    """int64[n, n] base fares of every ordered stop pair, in ``Network.stops`` order (SPEC §6.1)."""
    stops = reg.networks[nf.network].stops
    n = len(stops)
    if nf.bands is not None:
        uppers = np.array([b.upper_m for b in nf.bands[:-1]], dtype=np.int64)
        band_fares = np.array([b.fare_fen for b in nf.bands], dtype=np.int64)
        # The first band with d <= upper_m: searchsorted 'left' finds the first upper >= d,
        # and len(uppers) (the unbounded last band) when d exceeds them all.
        matrix = band_fares[np.searchsorted(uppers, reg.distances(nf.network), side="left")]
    else:
        assert nf.matrix is not None
        pos = {s: i for i, s in enumerate(stops)}
        matrix = np.full((n, n), NO_FARE, dtype=np.int64)
        for a, b, fen in nf.matrix:
            matrix[pos[a], pos[b]] = fen
    matrix[np.arange(n), np.arange(n)] = nf.same_station_fare
    return matrix


class _Tables:
    """The per-version arrays while they are being filled."""

    def __init__(self, n_v: int, n_lines: int, n_issuers: int, max_steps: int) -> None:
        self.line_fare = np.full((n_v, n_lines), NO_FARE, dtype=np.int64)
        self.accepted = np.zeros((n_v, n_issuers), dtype=np.bool_)
        self.concession = np.zeros((n_v, n_issuers), dtype=np.bool_)
        self.price_kind = np.full((n_v, N_MODES, N_PRODUCTS), PriceKind.NONE, dtype=np.int8)
        self.price_value = np.zeros((n_v, N_MODES, N_PRODUCTS), dtype=np.int64)
        self.transfer_steps = np.zeros(n_v, dtype=np.int32)
        self.transfer_window_ms = np.zeros(n_v, dtype=np.int64)
        self.transfer_from_first = np.zeros(n_v, dtype=np.bool_)
        self.transfer_allowed = np.zeros((n_v, N_MODES, N_MODES), dtype=np.bool_)
        self.step_kind = np.zeros((n_v, max_steps), dtype=np.int8)
        self.step_value = np.zeros((n_v, max_steps), dtype=np.int64)
        self.cap_fen = np.full((n_v, N_PRODUCTS), NO_CAP, dtype=np.int64)


def _compile_version(out: _Tables, vi: int, v: TariffVersion, iss_ix: dict[int, int]) -> None:
    for issuer in v.accepted_issuers:
        out.accepted[vi, iss_ix[issuer]] = True
    for issuer in v.concession_issuers:
        out.concession[vi, iss_ix[issuer]] = True
    for m in Mode:  # SPEC §6.3, with the ORDINARY fallback: the model tier's own price_for
        for q in Product:
            try:
                price = price_for(v, m, q)
            except LookupError:  # no ORDINARY price for the mode: stays PriceKind.NONE
                continue
            out.price_kind[vi, m, q], out.price_value[vi, m, q] = price_args(price)
    rule = v.transfer
    if rule is not None:
        out.transfer_steps[vi] = len(rule.steps)
        out.transfer_window_ms[vi] = rule.window_minutes * 60_000
        out.transfer_from_first[vi] = rule.window_from == "first_boarding"
        for a, b in rule.allowed_modes:
            out.transfer_allowed[vi, Mode[a.upper()], Mode[b.upper()]] = True
        for k, step in enumerate(rule.steps):
            out.step_kind[vi, k], out.step_value[vi, k] = transfer_step_args(step)
    for cap in v.caps:
        out.cap_fen[vi, Product[cap.product.upper()]] = cap.cap_fen


def _index_array(codes: list[int]) -> np.ndarray:
    """int32[max code + 1]: raw code -> its position in ``codes``; -1 for every other value."""
    index = np.full(max(codes, default=0) + 1, NO_INDEX, dtype=np.int32)
    for i, code in enumerate(codes):
        index[code] = i
    return index

