"""Peers of the fast path: SPEC §5 pairing and §6.4 chain detection in DuckDB SQL and in pandas.

They answer "would a general-purpose engine do as well?" on the same Parquet day. Both do the
same work as the kernels' matching and transfer detection, with window functions (``lag`` /
``lead`` over each card-day in ``(ts_ms, card_seq)`` order) instead of a loop:

- **pairing** (exact): with at most one open entry, an EXIT closes an entry exactly when the
  tap before it is an ENTRY on its network; so every FLAT, ENTRY and unpaired EXIT is a leg's
  boarding tap, an ENTRY whose next tap is an EXIT on its network is COMPLETE or OVERTIME
  (``max_journey_minutes``), any other ENTRY is INCOMPLETE, an unpaired EXIT is an ORPHAN_EXIT.
- **chains** (islands): a leg may join the previous one when both are non-penalty legs of
  one tariff area, the mode pair is allowed and the boarding is inside the window; a run of
  such legs is cut into chains of ``1 + len(steps)`` legs. Exact for ``previous_last_tap``
  windows. For ``first_boarding`` windows the start is the chain's first boarding, which a
  window function cannot carry without recursion: the peers measure from the previous leg's
  boarding instead, so their Wuhan chains can differ from the SPEC's (and the chain ordinals
  of the card's later legs with them). The benchmark reports how many legs agree; the timing
  compares the same amount of work.

Neither peer prices a leg: the kernels do strictly more work than they do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from tariffs.load import TariffSet
from tariffs.vocab import Mode

# the peers are written from SPEC alone, as an outside check, so they share no constant with tongka
MINUTE_MS = 60_000
SERVICE_DAY_SHIFT_MS = 4 * 3600 * 1000  # SPEC §1: + 8 h (CST) - 4 h (the day starts at 04:00)
DAY_MS = 86_400_000


@dataclass(frozen=True)
class PeerTables:
    """The tariff facts the peers read, as small frames, for one service day."""

    lines: pd.DataFrame  # operator, line, network, mode, area
    networks: pd.DataFrame  # network, max_journey_ms
    areas: pd.DataFrame  # area, window_ms, from_first, max_legs (0: no transfer rule)
    allowed: pd.DataFrame  # area, p_mode, mode: allowed transfer mode pairs


def peer_tables(tariffs: TariffSet, day: dt.date) -> PeerTables:
    reg = tariffs.registry
    lines = pd.DataFrame(
        [(op, ln, line.network, int(line.mode), reg.line_area(op, ln))
         for (op, ln), line in sorted(reg.lines.items())],
        columns=["operator", "line", "network", "mode", "area"],
    ).astype({"operator": "uint16", "line": "uint32", "network": "int64", "mode": "int64",
              "area": "int64"})
    networks, areas, allowed = [], [], []
    for area in sorted(tariffs.tariffs):
        version = tariffs.version_for(area, day)
        for nf in version.networks:
            networks.append((nf.network, nf.max_journey_minutes * MINUTE_MS))
        rule = version.transfer
        if rule is None:
            areas.append((area, 0, False, 0))
            continue
        areas.append((area, rule.window_minutes * MINUTE_MS, rule.window_from == "first_boarding",
                      1 + len(rule.steps)))
        for a, b in rule.allowed_modes:
            allowed.append((area, int(Mode[a.upper()]), int(Mode[b.upper()])))
    return PeerTables(
        lines=lines,
        networks=pd.DataFrame(networks, columns=["network", "max_journey_ms"]),
        areas=pd.DataFrame(areas, columns=["area", "window_ms", "from_first", "max_legs"]),
        allowed=pd.DataFrame(allowed, columns=["area", "p_mode", "mode"]),
    )


PEER_COLUMNS = ["issuer", "card_id", "board_ts_ms", "board_card_seq", "status", "chain",
                "transfer_no"]

DUCKDB_QUERY = f"""
CREATE OR REPLACE TEMP TABLE peer_legs AS
WITH t AS (
    SELECT p.issuer, p.card_id, p.card_seq, p.ts_ms, p.tap_type, p.stop,
           (p.ts_ms + {SERVICE_DAY_SHIFT_MS}) // {DAY_MS} AS day,  -- SPEC §1 (ts_ms > 0 here)
           l.network, l.mode, l.area
    FROM taps p JOIN peer_lines l ON p.operator = l.operator AND p.line = l.line
),
w AS (  -- SPEC §5: each card-day in (ts_ms, card_seq) order
    SELECT *,
           lag(tap_type) OVER card AS prev_type, lag(network) OVER card AS prev_net,
           lead(tap_type) OVER card AS next_type, lead(network) OVER card AS next_net,
           lead(ts_ms) OVER card AS next_ts
    FROM t
    WINDOW card AS (PARTITION BY issuer, card_id, day ORDER BY ts_ms, card_seq)
),
legs AS (  -- one row per boarding tap: FLAT, ENTRY, or an EXIT that closes no entry
    SELECT w.issuer, w.card_id, w.day, w.card_seq, w.ts_ms AS board_ts, w.area, w.mode,
           CASE
               WHEN w.tap_type = 0 THEN 0
               WHEN w.tap_type = 1 AND w.next_type = 2 AND w.next_net = w.network THEN
                   CASE WHEN w.next_ts - w.ts_ms <= n.max_journey_ms THEN 1 ELSE 3 END
               WHEN w.tap_type = 1 THEN 2
               ELSE 4
           END AS status,
           CASE WHEN w.tap_type = 1 AND w.next_type = 2 AND w.next_net = w.network
                THEN w.next_ts ELSE w.ts_ms END AS last_ts
    FROM w LEFT JOIN peer_networks n ON w.network = n.network
    WHERE NOT coalesce(w.tap_type = 2 AND w.prev_type = 1 AND w.prev_net = w.network, false)
),
p AS (  -- SPEC §6.4: the previous leg P of the card-day
    SELECT *,
           lag(status) OVER leg AS p_status, lag(area) OVER leg AS p_area,
           lag(mode) OVER leg AS p_mode, lag(last_ts) OVER leg AS p_last,
           lag(board_ts) OVER leg AS p_board
    FROM legs
    WINDOW leg AS (PARTITION BY issuer, card_id, day ORDER BY board_ts, card_seq)
),
j AS (
    SELECT p.*, a.max_legs,
           (p.status <= 1 AND p.p_status <= 1 AND p.p_area = p.area AND a.max_legs > 0
            AND m.area IS NOT NULL
            AND p.board_ts - CASE WHEN a.from_first THEN p.p_board ELSE p.p_last END
                <= a.window_ms) AS joins
    FROM p JOIN peer_areas a ON p.area = a.area
    LEFT JOIN peer_allowed m ON m.area = p.area AND m.p_mode = p.p_mode AND m.mode = p.mode
),
i AS (  -- islands: a leg that does not join starts one; penalty legs are in none
    SELECT *,
           sum(CASE WHEN coalesce(joins, false) THEN 0 ELSE 1 END) OVER (
               PARTITION BY issuer, card_id, day ORDER BY board_ts, card_seq
               ROWS UNBOUNDED PRECEDING) AS island
    FROM j
),
r AS (
    SELECT *, row_number() OVER (PARTITION BY issuer, card_id, day, island
                                 ORDER BY board_ts, card_seq) - 1 AS pos
    FROM i
)
SELECT issuer, card_id, board_ts AS board_ts_ms, card_seq AS board_card_seq, status,
       CASE WHEN status > 1 THEN -1
            ELSE dense_rank() OVER (PARTITION BY issuer, card_id, day
                                     ORDER BY CASE WHEN status > 1 THEN NULL ELSE island END,
                                              pos // greatest(max_legs, 1)) - 1
       END AS chain,
       CASE WHEN status > 1 THEN 0 ELSE pos % greatest(max_legs, 1) END AS transfer_no
FROM r
"""


def duckdb_connection(taps: pa.Table, peer: PeerTables, threads: int | None = None
                      ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the day's taps loaded as a table (loading is not timed)."""
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.register("taps_arrow", taps)
    con.execute("CREATE TABLE taps AS SELECT * FROM taps_arrow")
    con.unregister("taps_arrow")
    for name, frame in (("peer_lines", peer.lines), ("peer_networks", peer.networks),
                        ("peer_areas", peer.areas), ("peer_allowed", peer.allowed)):
        con.register(f"{name}_df", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_df")
        con.unregister(f"{name}_df")
    return con


def duckdb_pair_and_chain(con: duckdb.DuckDBPyConnection) -> int:
    """Run the peer query, materialising every leg; the number of legs."""
    con.execute(DUCKDB_QUERY)
    row = con.execute("SELECT count(*) FROM peer_legs").fetchone()
    assert row is not None  # count(*) always returns a row
    return int(row[0])


def duckdb_legs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(f"SELECT {', '.join(PEER_COLUMNS)} FROM peer_legs").df()


def pandas_pair_and_chain(taps: pd.DataFrame, peer: PeerTables) -> pd.DataFrame:
    """The same pairing and chains in vectorised pandas (shifts within sorted card-days)."""
    t = taps[["issuer", "card_id", "card_seq", "ts_ms", "tap_type", "operator", "line"]]
    t = t.merge(peer.lines, on=["operator", "line"], how="left", sort=False)
    t["day"] = (t["ts_ms"] + SERVICE_DAY_SHIFT_MS) // DAY_MS
    t = t.sort_values(["card_id", "issuer", "day", "ts_ms", "card_seq"], kind="stable",
                      ignore_index=True)
    same_prev = _same_group_as_previous(t)
    same_next = np.r_[same_prev[1:], False]
    tap_type = t["tap_type"].to_numpy()
    network = t["network"].to_numpy()
    prev_entry = same_prev & (np.r_[0, tap_type[:-1]] == 1) & (np.r_[-1, network[:-1]] == network)
    next_exit = same_next & (np.r_[tap_type[1:], 0] == 2) & (np.r_[network[1:], -1] == network)
    ts = t["ts_ms"].to_numpy()
    next_ts = np.r_[ts[1:], 0]
    journey = t[["network"]].merge(peer.networks, on="network", how="left")["max_journey_ms"]
    within = (next_ts - ts) <= journey.fillna(0).to_numpy()
    status = np.select(
        [tap_type == 0, (tap_type == 1) & next_exit & within, (tap_type == 1) & next_exit,
         tap_type == 1],
        [0, 1, 3, 2], default=4)
    last_ts = np.where((tap_type == 1) & next_exit, next_ts, ts)
    keep = ~((tap_type == 2) & prev_entry)
    legs = pd.DataFrame({
        "issuer": t["issuer"].to_numpy()[keep], "card_id": t["card_id"].to_numpy()[keep],
        "day": t["day"].to_numpy()[keep], "board_ts_ms": ts[keep],
        "board_card_seq": t["card_seq"].to_numpy()[keep], "status": status[keep],
        "area": t["area"].to_numpy()[keep], "mode": t["mode"].to_numpy()[keep],
        "last_ts": last_ts[keep],
    })
    legs = legs.merge(peer.areas, on="area", how="left", sort=False)
    same = _same_group_as_previous(legs)
    st = legs["status"].to_numpy()
    area = legs["area"].to_numpy()
    mode = legs["mode"].to_numpy()
    board = legs["board_ts_ms"].to_numpy()
    p_st, p_area, p_mode = np.r_[9, st[:-1]], np.r_[-1, area[:-1]], np.r_[-1, mode[:-1]]
    p_last, p_board = np.r_[0, legs["last_ts"].to_numpy()[:-1]], np.r_[0, board[:-1]]
    pairs = set(map(tuple, peer.allowed[["area", "p_mode", "mode"]].to_numpy().tolist()))
    allowed_key = area * 16 + p_mode * 4 + mode
    allowed_keys = np.array(sorted(a * 16 + b * 4 + c for a, b, c in pairs), dtype=np.int64)
    allowed = np.isin(allowed_key, allowed_keys)
    start = np.where(legs["from_first"].to_numpy(dtype=bool), p_board, p_last)
    joins = (same & (st <= 1) & (p_st <= 1) & (p_area == area) & allowed
             & (legs["max_legs"].to_numpy() > 0) & (board - start <= legs["window_ms"].to_numpy()))
    island = np.cumsum(~joins)
    pos = _position_in_run(island)
    max_legs = np.maximum(legs["max_legs"].to_numpy(), 1)
    piece = island * 1_000_000 + pos // max_legs  # one chain per (island, piece)
    penalty = st > 1
    chain_start = ~penalty & (~same | (piece != np.r_[-1, piece[:-1]]))
    # chain ordinal within the card-day: count chain starts since the card-day began
    card_start = ~same
    ordinal = np.cumsum(chain_start)
    base = np.maximum.accumulate(np.where(card_start, ordinal - chain_start, 0))
    chain = np.where(penalty, -1, ordinal - base - 1)
    legs["chain"] = chain
    legs["transfer_no"] = np.where(penalty, 0, pos % max_legs)
    return legs[PEER_COLUMNS]


def _same_group_as_previous(frame: pd.DataFrame) -> np.ndarray:
    """True where a row continues the card-day (issuer, card_id, day) of the row before it."""
    same = np.ones(len(frame), dtype=bool)
    if len(frame):
        same[0] = False
    for col in ("issuer", "card_id", "day"):
        a = frame[col].to_numpy()
        same[1:] &= a[1:] == a[:-1]
    return same


def _position_in_run(run_id: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal consecutive ids."""
    n = len(run_id)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[True, run_id[1:] != run_id[:-1]]
    idx = np.arange(n)
    return idx - np.maximum.accumulate(np.where(starts, idx, 0))


# --- The settlement peer: a day's obligations (SPEC §7-§8) in DuckDB SQL, from the legs file ---

OBLIGATIONS_QUERY = """
WITH l AS (
    SELECT service_day, card_id, issuer, operator, area, version, honoured_product, chain,
           board_ts_ms, board_card_seq, apportionment, base_fen, charged_fen,
           card_discount_fen, transfer_discount_fen, cap_discount_fen
    FROM read_parquet($legs)
),
c AS (  -- SPEC §7: each chain's revenue, base, size, first leg's mode, and each leg's position
    SELECT issuer, operator, service_day, card_id, chain, charged_fen, base_fen,
           sum(charged_fen) OVER ch AS r, sum(base_fen) OVER ch AS b, count(*) OVER ch AS n,
           first_value(apportionment) OVER cho AS mode, row_number() OVER cho AS pos
    FROM l
    WINDOW ch AS (PARTITION BY service_day, card_id, issuer, chain),
           cho AS (PARTITION BY service_day, card_id, issuer, chain
                   ORDER BY board_ts_ms, board_card_seq)
),
d AS (  -- pro rata by base: floor shares and remainders; everything else keeps charged
    SELECT *, chain >= 0 AND n > 1 AND mode = 1 AND b > 0 AS shared,
           CASE WHEN chain >= 0 AND n > 1 AND mode = 1 AND b > 0
                THEN (r * base_fen) // b ELSE charged_fen END AS q,
           CASE WHEN chain >= 0 AND n > 1 AND mode = 1 AND b > 0
                THEN (r * base_fen) % b ELSE 0 END AS rem
    FROM c
),
e AS (  -- largest remainder first, ties to the earlier leg
    SELECT issuer, operator, q, shared, r - sum(q) OVER ch AS left_fen,
           row_number() OVER (PARTITION BY service_day, card_id, issuer, chain
                              ORDER BY rem DESC, pos) AS rk
    FROM d
    WINDOW ch AS (PARTITION BY service_day, card_id, issuer, chain)
),
revenue AS (
    SELECT issuer, operator,
           CAST(sum(q + CASE WHEN shared AND rk <= left_fen THEN 1 ELSE 0 END) AS BIGINT) AS amount
    FROM e GROUP BY issuer, operator
),
fees AS (  -- SPEC §8: rounded half up once per (issuer, operator) pair, summed per operator
    SELECT r.operator, CAST(sum((r.amount * coalesce(f.fee_bp, 0) + 5000) // 10000) AS BIGINT)
           AS amount
    FROM revenue r LEFT JOIN peer_fees f ON f.operator = r.operator AND f.issuer = r.issuer
    GROUP BY r.operator
),
discounts AS (
    SELECT area, version, operator, honoured_product, sum(card_discount_fen) AS card,
           sum(transfer_discount_fen) AS transfer, sum(cap_discount_fen) AS cap
    FROM l GROUP BY ALL
),
subsidies AS (  -- the components the tariff version that priced them says the government funds
    SELECT g.area, g.operator,
           CAST(sum(g.card * f.gov_card + g.transfer * f.gov_transfer + g.cap * f.gov_cap)
                AS BIGINT) AS amount
    FROM discounts g JOIN peer_funders f
      ON f.area = g.area AND f.version = g.version AND f.honoured_product = g.honoured_product
    GROUP BY g.area, g.operator
)
SELECT 0 AS kind, issuer AS debtor, operator AS creditor, amount FROM revenue
UNION ALL SELECT 1, operator, 0, amount FROM fees
UNION ALL SELECT 2, area, operator, amount FROM subsidies
"""


def obligation_tables(tariffs: TariffSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The contract fee rates and the government-funded components, as small frames."""
    from clearing.service_day import day_number
    from settlement.obligations import Component, funder_of
    from tariffs.vocab import Product

    reg = tariffs.registry
    fees = pd.DataFrame(
        [(op, iss, tariffs.fee_bp(op, iss)) for op in sorted({o for o, _ in reg.lines})
         for iss in sorted(reg.issuers)],
        columns=["operator", "issuer", "fee_bp"])
    funders = []
    for area in sorted(tariffs.tariffs):
        for version in tariffs.tariffs[area].versions:
            for product in Product:
                funders.append((area, day_number(version.valid_from), int(product), *(
                    int(funder_of(version, comp, int(product)) == "government")
                    for comp in Component)))
    return fees, pd.DataFrame(funders, columns=["area", "version", "honoured_product", "gov_card",
                                                "gov_transfer", "gov_cap"])


def duckdb_obligations(legs_path: str, fees: pd.DataFrame, funders: pd.DataFrame,
                       threads: int | None = None) -> list[tuple[int, int, int, int]]:
    """The day's obligations as (kind, debtor code, creditor code, amount) rows, non-zero, sorted.

    One query on the legs Parquet file in a fresh in-memory DuckDB: apportionment (SPEC §7,
    largest remainder), revenue per (issuer, operator), fees per pair rounded half up, and the
    government-funded discount components per (area, operator). Kinds are
    ``settlement.obligations.ObligationKind`` values; the centre's code is left as 0.
    """
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.register("peer_fees", fees)
        con.register("peer_funders", funders)
        rows = con.execute(OBLIGATIONS_QUERY, {"legs": legs_path}).fetchall()
    finally:
        con.close()
    return sorted((int(k), int(d), int(c), int(a)) for k, d, c, a in rows if a)


def obligation_rows(obligations) -> list[tuple[int, int, int, int]]:  # type: ignore[no-untyped-def]
    """Tongka's obligations in the peer's row shape, for comparison."""
    return sorted((int(o.kind), o.debtor.code, 0 if int(o.kind) == 1 else o.creditor.code,
                   o.amount_fen) for o in obligations)
