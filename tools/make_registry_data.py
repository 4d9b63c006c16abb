"""Write the registry CSV files under tariffs/data/registry (run once; the output is committed).

Wuhan Metro comes from the OpenStreetMap-derived files in wuhan-metro/ (© OpenStreetMap
contributors, ODbL 1.0); every other line, stop and distance is synthetic and marked so.

    python tools/make_registry_data.py                       # rebuild from the vendored copy
    python tools/make_registry_data.py --from ../shared/data/wuhan-metro   # refresh it first

``--from`` copies the reference files (and their SOURCES.md, which carries the attribution)
into ``wuhan-metro/`` unchanged, so the derived CSVs always sit beside the data they came from.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tariffs" / "data" / "registry"
METRO_FILES = ("stations.csv", "line_stations.csv", "lines.csv", "SOURCES.md")

CITIES = [
    (420100, "Wuhan", "武汉"),
    (420200, "Huangshi", "黄石"),
    (420700, "Ezhou", "鄂州"),
    (420900, "Xiaogan", "孝感"),
    (421100, "Huanggang", "黄冈"),
    (421200, "Xianning", "咸宁"),
    (429004, "Xiantao", "仙桃"),
    (429005, "Qianjiang", "潜江"),
    (429006, "Tianmen", "天门"),
]

# (code, name, home city, kind); kind: circle (one per city), tunion (out-of-circle T-Union),
# closed (out-of-circle, not T-Union: priced at the visitor rate)
ISSUERS = [
    (1, "Wuhan Tong 武汉通", 420100, "circle"),
    (2, "Huangshi Tong 黄石通", 420200, "circle"),
    (3, "Ezhou Tong 鄂州通", 420700, "circle"),
    (4, "Xiaogan Tong 孝感通", 420900, "circle"),
    (5, "Huanggang Tong 黄冈通", 421100, "circle"),
    (6, "Xianning Tong 咸宁通", 421200, "circle"),
    (7, "Xiantao Tong 仙桃通", 429004, "circle"),
    (8, "Qianjiang Tong 潜江通", 429005, "circle"),
    (9, "Tianmen Tong 天门通", 429006, "circle"),
    (20, "Changsha Xiangjiang T-Union 长沙交通联合", 430100, "tunion"),
    (21, "Nanchang T-Union 南昌交通联合", 360100, "tunion"),
    (30, "Closed-loop visitor card (not T-Union)", 0, "closed"),
]

# (code, name, city, mode of its lines)
OPERATORS = [
    (101, "Wuhan Bus Group 武汉公交集团", 420100),
    (102, "Wuhan Metro 武汉地铁", 420100),
    (103, "Wuhan Ferry 武汉轮渡", 420100),
    (201, "Huangshi Public Transport 黄石公交", 420200),
    (202, "Daye Public Transport 大冶公交", 420200),
    (203, "Yangxin Public Transport 阳新公交", 420200),
    (301, "Ezhou Public Transport 鄂州公交", 420700),
    (302, "Ezhou-Wuhan Intercity Coach 鄂州城际", 420700),
    (401, "Xiaogan Public Transport 孝感公交", 420900),
    (501, "Huanggang Public Transport 黄冈公交", 421100),
    (601, "Xianning Public Transport 咸宁公交", 421200),
    (701, "Xiantao Public Transport 仙桃公交", 429004),
    (801, "Qianjiang Public Transport 潜江公交", 429005),
    (901, "Tianmen Public Transport 天门公交", 429006),
]

# network id, name, operator city
NETWORKS = [
    (1, "Wuhan Metro", 420100, "osm"),
    (2, "Ezhou-Wuhan intercity coach", 420700, "synthetic"),
]

# flat bus lines per operator: (operator, number of lines, stops per line, stop id base, city)
BUS = [
    (101, 24, 18, 110000, 420100),
    (201, 10, 14, 200000, 420200),
    (202, 5, 12, 210000, 420200),
    (203, 4, 12, 220000, 420200),
    (301, 6, 14, 300000, 420700),
    (401, 6, 14, 400000, 420900),
    (501, 6, 14, 500000, 421100),
    (601, 6, 14, 600000, 421200),
    (701, 5, 12, 700000, 429004),
    (801, 5, 12, 800000, 429005),
    (901, 5, 12, 900000, 429006),
]

METRO_STOP_BASE = 100000  # stop id = base + the station's row in wuhan-metro/stations.csv
METRO_OPERATOR, METRO_NETWORK = 102, 1
# distance_source values of wuhan-metro/line_stations.csv, copied to line_stops.source: a hop
# is measured on OSM track, or estimated (SOURCES.md §5); anything else is refused.
MEASURED = ("line_start", "osm_along_track")
ESTIMATED = ("estimated_section_length", "estimated_straight_x_line_ratio")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="refresh wuhan-metro/ from this reference folder first")
    args = parser.parse_args(argv)
    if args.source is not None:
        vendor_metro(args.source, OUT / "wuhan-metro")
    rng = random.Random(20261125)
    OUT.mkdir(parents=True, exist_ok=True)
    _write("cities.csv", ["city", "name", "name_zh"], CITIES)
    _write("issuers.csv", ["issuer", "name", "home_city", "kind"], ISSUERS)
    _write("operators.csv", ["operator", "name", "city"], OPERATORS)
    _write("networks.csv", ["network", "name", "city", "source"], NETWORKS)

    stops: list[tuple] = []
    lines: list[tuple] = []
    line_stops: list[tuple] = []

    # Wuhan Metro from the OSM-derived reference data.
    metro_stops, metro_lines, metro_line_stops = metro_rows(OUT / "wuhan-metro")
    stops += metro_stops
    lines += metro_lines
    line_stops += metro_line_stops

    # Synthetic flat bus lines: each line a run of fresh stops plus a few shared hubs.
    for op, n_lines, n_stops, base, city in BUS:
        hubs = [base + 1 + h for h in range(4)]
        for h, sid in enumerate(hubs):
            stops.append((sid, f"{op} hub {h + 1}", "", city, "synthetic"))
        next_id = base + 10
        for ln in range(1, n_lines + 1):
            lines.append((op, ln, f"Bus {ln}", "bus", 0, "synthetic"))
            seq_stops = []
            for _ in range(n_stops - 2):
                stops.append((next_id, f"{op}-{ln} stop {next_id - base}", "", city, "synthetic"))
                seq_stops.append(next_id)
                next_id += 1
            seq_stops.insert(0, hubs[ln % len(hubs)])
            seq_stops.insert(n_stops // 2, hubs[(ln + 1) % len(hubs)])
            for seq, sid in enumerate(seq_stops, start=1):
                metres = 0 if seq == 1 else rng.randrange(400, 1200)
                line_stops.append((op, ln, seq, sid, metres, "synthetic"))

    # Wuhan ferries: two river crossings (synthetic stops).
    ferry = [
        (1, [(120001, "Zhonghua Road Pier 中华路码头"), (120002, "Wuhan Guan Pier 武汉关码头")]),
        (2, [(120003, "Wuchang Pier 武昌码头"), (120004, "Hankou Pier 汉口码头")]),
    ]
    for ln, piers in ferry:
        lines.append((103, ln, f"Ferry {ln}", "ferry", 0, "synthetic"))
        for seq, (sid, name) in enumerate(piers, start=1):
            stops.append((sid, name, "", 420100, "synthetic"))
            line_stops.append((103, ln, seq, sid, 0 if seq == 1 else 1500, "synthetic"))

    # Ezhou-Wuhan intercity coach: starts in Ezhou, ends at Wuhan Metro Line 11's Zuoling.
    coach = [
        (310001, "Ezhou Coach Station 鄂州客运站", 420700),
        (310002, "Huarong 华容", 420700),
        (310003, "Gedian 葛店", 420700),
        (310004, "Zuoling Coach Stop 左岭", 420100),
        (310005, "Optics Valley Coach Stop 光谷", 420100),
    ]
    lines.append((302, 1, "Ezhou-Wuhan Intercity 1", "intercity", 2, "synthetic"))
    spacing = [0, 14000, 12000, 9000, 21000]
    for seq, ((sid, name, city), metres) in enumerate(zip(coach, spacing, strict=True), start=1):
        stops.append((sid, name, "", city, "synthetic"))
        line_stops.append((302, 1, seq, sid, metres, "synthetic"))

    _write("stops.csv", ["stop", "name", "name_zh", "city", "source"], stops)
    _write("lines.csv", ["operator", "line", "name", "mode", "network", "source"], lines)
    _write(
        "line_stops.csv",
        ["operator", "line", "seq", "stop", "metres_from_previous", "source"],
        line_stops,
    )


def vendor_metro(source: Path, dest: Path) -> None:
    """Copy the reference files unchanged: the derived rows must be traceable to them."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in METRO_FILES:
        shutil.copyfile(source / name, dest / name)


def metro_rows(metro_dir: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(stops, lines, line_stops) rows of Wuhan Metro from the OSM-derived files.

    Stop ids follow the row order of stations.csv, whose first rows are the first version's in
    its order, so every earlier stop id still names the same station. Hop metres are the
    reference's ``metres_from_previous`` as they are (along the track, or an estimate that
    ``distance_source`` names); nothing is scaled.
    """
    stops: list[tuple] = []
    station_ids: dict[str, int] = {}
    with open(metro_dir / "stations.csv", encoding="utf-8") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=1):
            sid = METRO_STOP_BASE + n
            station_ids[row["station_id"]] = sid
            name = row["name_en"] or row["station_id"]
            stops.append(
                (sid, name, row["name_zh"], int(row["city_code"]), "osm:" + row["station_id"])
            )
    with open(metro_dir / "lines.csv", encoding="utf-8") as fh:
        names = {int(r["line"]): r["name_en"] for r in csv.DictReader(fh)}
    with open(metro_dir / "line_stations.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    lines: list[tuple] = []
    line_stops: list[tuple] = []
    for ln in sorted({int(r["line"]) for r in rows}):
        lines.append((METRO_OPERATOR, ln, f"Metro {names[ln]}", "metro", METRO_NETWORK, "osm"))
        for r in sorted((r for r in rows if int(r["line"]) == ln), key=lambda r: int(r["seq"])):
            source = r["distance_source"]
            if source not in MEASURED + ESTIMATED:
                raise ValueError(f"line {ln} seq {r['seq']}: unknown distance_source {source!r}")
            line_stops.append((METRO_OPERATOR, ln, int(r["seq"]), station_ids[r["station_id"]],
                               int(r["metres_from_previous"]), source))
    return stops, lines, line_stops


def _write(name: str, header: list[str], rows: list[tuple]) -> None:
    with open(OUT / name, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


if __name__ == "__main__":
    main()
