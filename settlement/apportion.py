"""Apportionment (SPEC §7): every leg's allocated revenue, the one place remainder allocation lives.

``allocate`` is the vectorised form that runs on a whole day (ten million legs) with numpy;
``allocate_chain`` is its plain, obvious twin for one chain, written as the SPEC reads, and the
tests hold the two equal on any input; ``allocate_reference`` applies it to a whole table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from clearing.legs import NO_CHAIN, Apportionment

# The columns that identify a chain and order its legs (SPEC §5: a card is (issuer, card_id),
# its day's legs are ordered by (boarding time, boarding card_seq)).
_CHAIN_KEYS = ("service_day", "card_id", "issuer", "chain")
_ORDER_KEYS = ("board_ts_ms", "board_card_seq")


def allocate_chain(charged: Sequence[int], base: Sequence[int], mode: int) -> list[int]:
    """SPEC §7 for one chain whose legs are given in order: the readable twin of ``allocate``."""
    if len(charged) < 2 or mode != Apportionment.PRO_RATA or sum(base) == 0:
        return [int(c) for c in charged]
    revenue, total_base = sum(charged), sum(base)
    shares = [divmod(revenue * b, total_base) for b in base]  # floor and remainder
    out = [q for q, _ in shares]
    left = revenue - sum(out)
    # SPEC §7: one fen each to the largest remainders; ties go to the earlier leg.
    for i in sorted(range(len(base)), key=lambda i: (-shares[i][1], i))[:left]:
        out[i] += 1
    return out


def allocate_reference(legs: pa.Table) -> np.ndarray:
    """The plain twin of ``allocate`` for a whole table: group legs by chain in a dict, order each
    chain by boarding, ``allocate_chain`` it. Slow (Python per leg); for tests only."""
    cols = {k: legs.column(k).to_pylist() for k in (*_CHAIN_KEYS, *_ORDER_KEYS, "charged_fen",
                                                     "base_fen", "apportionment")}
    out = [int(c) for c in cols["charged_fen"]]
    chains: dict[tuple[int, ...], list[int]] = {}
    for row in range(legs.num_rows):
        if cols["chain"][row] != NO_CHAIN:
            chains.setdefault(tuple(cols[k][row] for k in _CHAIN_KEYS), []).append(row)
    for rows in chains.values():
        rows.sort(key=lambda r: (cols["board_ts_ms"][r], cols["board_card_seq"][r]))
        shares = allocate_chain([cols["charged_fen"][r] for r in rows],
                                [cols["base_fen"][r] for r in rows],
                                cols["apportionment"][rows[0]])
        for r, share in zip(rows, shares, strict=True):
            out[r] = share
    return np.array(out, dtype=np.int64)


def allocate(legs: pa.Table) -> np.ndarray:
    """Allocated revenue per leg (int64, in the table's row order); sums to charged per chain.

    A leg in no chain or alone in its chain keeps its charged amount; a chain of several legs
    shares its charged total by the apportionment of its first leg's tariff version.
    """
    charged = _col(legs, "charged_fen").astype(np.int64, copy=True)
    if legs.num_rows == 0:
        return charged
    chain = _col(legs, "chain")
    idx = np.flatnonzero(chain != NO_CHAIN)
    if idx.size == 0:
        return charged

    keys = [_col(legs, k)[idx] for k in _CHAIN_KEYS]
    order_keys = [_col(legs, k)[idx] for k in _ORDER_KEYS]
    if _in_chain_order(keys, order_keys):
        # A stored day's legs are in LEG_SORT_KEYS order, which already groups each chain
        # and orders its legs: the sort below was the largest cost of settling (issue 13).
        rows = idx
        new_group = np.zeros(rows.size, dtype=bool)
        new_group[0] = True
        for k in keys:
            new_group[1:] |= k[1:] != k[:-1]
    else:
        # lexsort's last key is the primary one: chain identity first, then the legs' order.
        order = np.lexsort([*reversed(order_keys), *reversed(keys)])
        rows = idx[order]  # table rows, grouped by chain, each chain in leg order
        new_group = np.zeros(rows.size, dtype=bool)
        new_group[0] = True
        for k in keys:
            ks = k[order]
            new_group[1:] |= ks[1:] != ks[:-1]
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, rows.size))

    base = _col(legs, "base_fen").astype(np.int64)
    mode = _col(legs, "apportionment")
    revenue = np.add.reduceat(charged[rows], starts)
    total_base = np.add.reduceat(base[rows], starts)
    # SPEC §7: the chain's mode is that of its first leg's version; sum(base) = 0 keeps charged.
    shared = (sizes > 1) & (mode[rows[starts]] == Apportionment.PRO_RATA) & (total_base > 0)
    if not shared.any():
        return charged

    group_of = np.repeat(np.arange(starts.size), sizes)
    pick = shared[group_of]
    legs_rows = rows[pick]  # still grouped by chain and in leg order
    gid = group_of[pick]
    # Renumber the shared chains 0..m-1 so per-chain arrays stay small.
    kept = np.flatnonzero(shared)
    local = np.searchsorted(kept, gid)
    r_chain, b_chain = revenue[kept], total_base[kept]
    # Every product is int64: R <= sum of a chain's int32 debits and base <= 10^7 fen (tariff
    # bounds), so R * base stays far below 2^63.
    num = r_chain[local] * base[legs_rows]
    quotient = num // b_chain[local]  # floor
    remainder = num - quotient * b_chain[local]
    starts_local = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
    left = r_chain - np.add.reduceat(quotient, starts_local)

    # SPEC §7: largest remainder first, ties to the earlier leg (its position within the chain).
    position = np.arange(local.size) - starts_local[local]
    rank_order = np.lexsort((position, -remainder, local))
    rank = np.empty(local.size, dtype=np.int64)
    rank[rank_order] = np.arange(local.size) - starts_local[local[rank_order]]
    quotient += rank < left[local]

    charged[legs_rows] = quotient
    return charged


def _in_chain_order(keys: list[np.ndarray], order_keys: list[np.ndarray]) -> bool:
    """True when every chain's legs are contiguous and in leg order, as the sort would put them.

    Checks that consecutive rows never go down in the (card_id, issuer, service_day, chain,
    board_ts_ms, board_card_seq) order: then equal chain keys are contiguous (a key can only
    come back after a smaller one) and each chain is in (board_ts_ms, board_card_seq) order.
    The order of whole chains does not matter to the result, only grouping and leg order.
    """
    service_day, card_id, issuer, chain = keys
    if card_id.size < 2:
        return True
    down = np.zeros(card_id.size - 1, dtype=bool)
    equal = np.ones(card_id.size - 1, dtype=bool)
    for k in (card_id, issuer, service_day, chain, *order_keys):
        a, b = k[:-1], k[1:]
        down |= equal & (b < a)
        equal &= b == a
    return not down.any()


def _col(table: pa.Table, name: str) -> np.ndarray:
    column: np.ndarray = table.column(name).to_numpy()
    return column
