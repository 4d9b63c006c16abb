"""The circle's registry: cities, issuers, operators, networks, lines and stops (SPEC §2, §5).

Loaded once from the CSV files under ``tariffs/data/registry`` into frozen values; the
tariffs, the readers and the clearing engine all look things up here.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from tariffs.vocab import Mode, parse_enum

DEFAULT_REGISTRY_DIR = Path(__file__).resolve().parent / "data" / "registry"
FLAT = 0  # network id of a line that is not part of an entry-exit network


@dataclass(frozen=True, slots=True)
class City:
    code: int  # GB/T 2260
    name: str
    name_zh: str


@dataclass(frozen=True, slots=True)
class Issuer:
    code: int
    name: str
    home_city: int  # 0 when outside any known city
    kind: str  # circle | tunion | closed


@dataclass(frozen=True, slots=True)
class Operator:
    code: int
    name: str
    city: int  # the tariff area of every line it runs


@dataclass(frozen=True, slots=True)
class Stop:
    stop: int
    name: str
    city: int  # the city the stop lies in, which may differ from its lines' tariff area


@dataclass(frozen=True, slots=True)
class Line:
    operator: int
    line: int
    name: str
    mode: Mode
    network: int  # FLAT (0) for flat-fare lines
    stops: tuple[int, ...]
    metres: tuple[int, ...]  # track metres from the previous stop; 0 for the first

    @property
    def key(self) -> tuple[int, int]:
        return (self.operator, self.line)


@dataclass(frozen=True, slots=True)
class Network:
    network: int
    name: str
    city: int  # the tariff area; all its lines' operators belong to it
    lines: tuple[tuple[int, int], ...]
    stops: tuple[int, ...]  # sorted stop ids; a stop's index here indexes the distance matrix


@dataclass(frozen=True)
class Registry:
    cities: dict[int, City]
    issuers: dict[int, Issuer]
    operators: dict[int, Operator]
    networks: dict[int, Network]
    lines: dict[tuple[int, int], Line]
    stops: dict[int, Stop]
    _distances: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def own_issuers(self, city: int) -> tuple[int, ...]:
        """The issuers whose home is ``city`` (Wuhan Tong is Wuhan's)."""
        return tuple(i.code for i in self.issuers.values() if i.home_city == city)

    def line_area(self, operator: int, line: int) -> int:
        """SPEC §5: a line's tariff area is its operator's city."""
        return self.operators[operator].city

    def distances(self, network: int) -> np.ndarray:
        """Shortest-path track metres between every pair of the network's stops (int64 matrix).

        Indexed by the position of each stop in ``Network.stops``; -1 where unreachable.
        """
        if network not in self._distances:
            self._distances[network] = _all_pairs_metres(self, self.networks[network])
        return self._distances[network]

    def stop_index(self, network: int) -> dict[int, int]:
        return {s: i for i, s in enumerate(self.networks[network].stops)}


def load_registry(directory: Path | None = None) -> Registry:
    """Read a registry directory; the default one is cached for the life of the process."""
    if directory is None or Path(directory).resolve() == DEFAULT_REGISTRY_DIR:
        return _default_registry()
    return _read_registry(Path(directory))


@cache
def _default_registry() -> Registry:
    return _read_registry(DEFAULT_REGISTRY_DIR)


def _rows(directory: Path, name: str) -> Iterable[dict[str, str]]:
    with open(directory / name, encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


def _read_registry(directory: Path) -> Registry:
    cities = {
        int(r["city"]): City(int(r["city"]), r["name"], r["name_zh"])
        for r in _rows(directory, "cities.csv")
    }
    issuers = {
        int(r["issuer"]): Issuer(int(r["issuer"]), r["name"], int(r["home_city"]), r["kind"])
        for r in _rows(directory, "issuers.csv")
    }
    operators = {
        int(r["operator"]): Operator(int(r["operator"]), r["name"], int(r["city"]))
        for r in _rows(directory, "operators.csv")
    }
    stops = {
        int(r["stop"]): Stop(int(r["stop"]), r["name"], int(r["city"]))
        for r in _rows(directory, "stops.csv")
    }
    seq: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for r in _rows(directory, "line_stops.csv"):
        key = (int(r["operator"]), int(r["line"]))
        seq.setdefault(key, []).append(
            (int(r["seq"]), int(r["stop"]), int(r["metres_from_previous"]))
        )
    lines: dict[tuple[int, int], Line] = {}
    for r in _rows(directory, "lines.csv"):
        key = (int(r["operator"]), int(r["line"]))
        ordered = sorted(seq.get(key, []))
        lines[key] = Line(
            operator=key[0],
            line=key[1],
            name=r["name"],
            mode=Mode(parse_enum(Mode, r["mode"])),
            network=int(r["network"]),
            stops=tuple(s for _, s, _ in ordered),
            metres=tuple(m for _, _, m in ordered),
        )
    networks: dict[int, Network] = {}
    for r in _rows(directory, "networks.csv"):
        nid = int(r["network"])
        members = tuple(sorted(k for k, ln in lines.items() if ln.network == nid))
        net_stops = tuple(sorted({s for k in members for s in lines[k].stops}))
        networks[nid] = Network(nid, r["name"], int(r["city"]), members, net_stops)
    return Registry(cities, issuers, operators, networks, lines, stops)


def _all_pairs_metres(reg: Registry, net: Network) -> np.ndarray:
    """Dijkstra from every stop over the network's track graph (consecutive stops of its lines)."""
    index = {s: i for i, s in enumerate(net.stops)}
    adj: list[dict[int, int]] = [{} for _ in net.stops]
    for key in net.lines:
        ln = reg.lines[key]
        for a, b, m in zip(ln.stops, ln.stops[1:], ln.metres[1:], strict=False):
            ia, ib = index[a], index[b]
            best = min(m, adj[ia].get(ib, m))
            adj[ia][ib] = adj[ib][ia] = best
    n = len(net.stops)
    out = np.full((n, n), -1, dtype=np.int64)
    for src in range(n):
        dist = out[src]
        heap = [(0, src)]
        while heap:
            d, u = heapq.heappop(heap)
            if dist[u] >= 0:
                continue
            dist[u] = d
            for v, w in adj[u].items():
                if dist[v] < 0:
                    heapq.heappush(heap, (d + w, v))
    return out
