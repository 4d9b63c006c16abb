"""The real Wuhan Metro (issue #15): 13 lines, 284 stations, metres along the track.

Each trip test is a passenger's question with its answer worked out by hand from the derived
data (``tariffs/data/registry/line_stops.csv``, from OpenStreetMap, © OpenStreetMap
contributors, ODbL 1.0) and the published fare bands of ``420100-wuhan.toml``: the shortest
path, line by line with its hop metres, its total, the band's base fare and the ordinary Wuhan
Tong card fare (9折, SPEC §1 rounding: ``floor((base * 9000 + 5000) / 10000)``). The test
checks every hop against the data, the total against the registry's shortest path, and the
fares on the reference and the fast path. Then: every ordered pair of the 284 stations prices
on both paths, the data keeps its sources and ids, and generated days ride every line.
"""

from __future__ import annotations

import csv
import datetime as dt
from functools import cache

import numpy as np
import pyarrow as pa
import pytest

from clearing.fast import match_and_price_fast
from clearing.legs import LegStatus
from clearing.reference import match_and_price
from clearing.service_day import local_ms
from clearing.taps import ACCOUNT_BASED, TAP_SCHEMA, TapType, taps_table
from tariffs.fares import base_fare_network, network_fare
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import DEFAULT_REGISTRY_DIR, Registry
from tariffs.vocab import Media, Product
from tongka.testing.generate import LINE_WEIGHT, generate

DAY = dt.date(2026, 11, 24)  # Wuhan's 2020 version is in force
METRO, NETWORK, WUHAN_TONG = 102, 1, 1
METRO_DIR = DEFAULT_REGISTRY_DIR / "wuhan-metro"

# Stations by their registry stop id (100000 + row of wuhan-metro/stations.csv).
HANKOU_NORTH, XINRONG, XUNLIMEN, DAZHI_ROAD, ZONGGUAN, MATOUTAN_PARK, JINGHE = (
    100001, 100005, 100013, 100012, 100019, 100030, 100032)
TIANHE_AIRPORT, JULONG_BOULEVARD, HONGTU_BOULEVARD, CHANGQINGHUAYUAN = (
    100033, 100036, 100038, 100041)
HANKOU_RAILWAY_STATION, FANHU, JIANGHAN_ROAD, PANGXIEJIA = 100043, 100044, 100048, 100050
HONGSHAN_SQUARE, ZHONGNAN_ROAD, HUQUAN, OPTICS_VALLEY_SQUARE = 100052, 100053, 100057, 100059
WUHAN_BUSINESS_DISTRICT, XIANGGANG_ROAD, ZHAOJIATIAO, HOUHU_AVENUE = (
    100080, 100083, 100085, 100089)
WUHAN_RAILWAY_STATION, WUCHANG_RAILWAY_STATION, ZHONGJIACUN = 100091, 100103, 100107
JIANG_AN_ROAD, GUANGGU_5TH_ROAD, GEDIANNAN = 100125, 100136, 100144
WUCHANG_EAST_SQUARE = 100127  # 武昌站东广场 (lines 11, 12), apart from 武昌火车站
HUBEI_UNIV_CHINESE_MEDICINE, XUJIAPENG = 100167, 100156
SOUTH_EXPO_CENTRE, HENGDIAN, YEZHIHU = 100189, 100193, 100209
JINTAN_ROAD, MILITARY_ATHLETES_VILLAGE = 100217, 100234
GANGDUHUAYUAN, WANGJIADUN, YUANLIN_ROAD = 100235, 100222, 100095
HANNAN_GENERAL_AIRPORT, WUHAN_WEST_SQUARE, JINTAI = 100264, 100265, 100284


@cache
def tariffs() -> TariffSet:
    return load_tariff_set()


def reg() -> Registry:
    return tariffs().registry


def hop_metres(line: int, a: int, b: int) -> list[int]:
    """The line's hop metres from a to b, in riding order (either direction)."""
    ln = reg().lines[(METRO, line)]
    i, j = ln.stops.index(a), ln.stops.index(b)
    return list(ln.metres[i + 1:j + 1]) if i < j else list(reversed(ln.metres[j + 1:i + 1]))


def price_trip(a: int, b: int, first_line: int, last_line: int) -> list[tuple[int, int, int]]:
    """(status, base, computed) of one ordinary Wuhan Tong trip, on the reference and fast path."""
    taps = taps_table([
        dict(operator=METRO, device_id=1, device_seq=1, card_id=42, card_seq=1,
             issuer=WUHAN_TONG, product=int(Product.ORDINARY), media=int(Media.CARD),
             ts_ms=local_ms(DAY, 8), city=reg().stops[a].city, line=first_line, stop=a,
             tap_type=int(TapType.ENTRY), debited_fen=ACCOUNT_BASED),
        dict(operator=METRO, device_id=2, device_seq=1, card_id=42, card_seq=2,
             issuer=WUHAN_TONG, product=int(Product.ORDINARY), media=int(Media.CARD),
             ts_ms=local_ms(DAY, 10), city=reg().stops[b].city, line=last_line, stop=b,
             tap_type=int(TapType.EXIT), debited_fen=ACCOUNT_BASED),
    ])
    out = []
    for legs in (match_and_price(taps, tariffs()), match_and_price_fast(taps, tariffs())):
        (leg,) = legs.to_pylist()
        out.append((leg["status"], leg["base_fen"], leg["computed_fen"]))
    return out


def check_trip(path: list[tuple[int, int, int, list[int]]], km: str, base: int,
               card: int) -> None:
    """``path``: (line, from, to, hop metres as worked out by hand); ``km`` the total written."""
    for line, a, b, hops in path:
        assert hop_metres(line, a, b) == hops, (line, a, b)
    total = sum(sum(hops) for *_, hops in path)
    assert f"{total / 1000:.3f}" == km
    a, b = path[0][1], path[-1][2]
    index = reg().stop_index(NETWORK)
    assert int(reg().distances(NETWORK)[index[a], index[b]]) == total
    complete = int(LegStatus.COMPLETE)
    assert price_trip(a, b, path[0][0], path[-1][0]) == [(complete, base, card)] * 2


# --- Passengers' questions --------------------------------------------------------------------


def test_wuchang_railway_station_to_wuhan_railway_station() -> None:
    """Wuchang Railway Station → Wuhan Railway Station? 5 yuan, 4.50 by Wuhan Tong.

    The one published pair: 5 yuan. Line 4 to Zhongnan Road, Line 2 one stop to Hongshan
    Square (Line 4 takes 1 088 m between them, Line 2 943 m), Line 4 on: 2.025 + 0.943 +
    12.398 = 15.366 km, in the 12-18 km band: 500 fen; 9折 450.
    """
    check_trip([
        (4, WUCHANG_RAILWAY_STATION, ZHONGNAN_ROAD, [913, 1112]),
        (2, ZHONGNAN_ROAD, HONGSHAN_SQUARE, [943]),
        (4, HONGSHAN_SQUARE, WUHAN_RAILWAY_STATION,
         [1029, 1242, 1028, 946, 1085, 1128, 1236, 1128, 1612, 1128, 836]),
    ], "15.366", base=500, card=450)


def test_hankou_railway_station_to_optics_valley_square() -> None:
    """Hankou Railway Station → Optics Valley Square? 6 yuan, 5.40 (issue #15: was 7).

    Line 2 to Fanhu, Line 3 to Xianggang Road, Line 6 to Jianghan Road, Line 2 on:
    1.205 + 2.591 + 3.100 + 15.947 = 22.843 km (published 22.9), 18-24 km: 600 fen; 540.
    """
    check_trip([
        (2, HANKOU_RAILWAY_STATION, FANHU, [1205]),
        (3, FANHU, XIANGGANG_ROAD, [1624, 967]),
        (6, XIANGGANG_ROAD, JIANGHAN_ROAD, [867, 853, 1380]),
        (2, JIANGHAN_ROAD, OPTICS_VALLEY_SQUARE,
         [3326, 1547, 924, 1181, 943, 1406, 1242, 1139, 1392, 1428, 1419]),
    ], "22.843", base=600, card=540)


def test_tianhe_airport_to_optics_valley_square() -> None:
    """Tianhe Airport → Optics Valley Square? 9 yuan, 8.10.

    Line 2 to Hongtu Boulevard, Line 8 to Xujiapeng, Line 7 to Pangxiejia, Line 2 on:
    15.019 + 11.359 + 4.724 + 11.074 = 42.176 km, 40-50 km: 900 fen; 810.
    """
    check_trip([
        (2, TIANHE_AIRPORT, HONGTU_BOULEVARD, [5972, 1443, 1926, 1739, 3939]),
        (8, HONGTU_BOULEVARD, XUJIAPENG, [1931, 1367, 1814, 1276, 1746, 3225]),
        (7, XUJIAPENG, PANGXIEJIA, [1724, 1913, 1087]),
        (2, PANGXIEJIA, OPTICS_VALLEY_SQUARE, [924, 1181, 943, 1406, 1242, 1139, 1392, 1428, 1419]),
    ], "42.176", base=900, card=810)


def test_hankou_north_to_jinghe_is_shorter_across_town_than_along_line_1() -> None:
    """Hankou North → Jinghe (both ends of Line 1)? 8 yuan, 7.20.

    Line 1 is 37.792 km end to end (9 yuan); across Yangluo, 3, 2 and 6 it is 6.714 + 2.919 +
    4.046 + 5.977 + 11.858 + 3.095 = 34.609 km, 32-40 km: 800 fen; 720.
    """
    check_trip([
        (1, HANKOU_NORTH, XINRONG, [3420, 1121, 1008, 1165]),
        (21, XINRONG, HOUHU_AVENUE, [1752, 1167]),
        (3, HOUHU_AVENUE, HONGTU_BOULEVARD, [1497, 2549]),
        (2, HONGTU_BOULEVARD, CHANGQINGHUAYUAN, [2909, 2051, 1017]),
        (6, CHANGQINGHUAYUAN, MATOUTAN_PARK, [971, 1163, 1778, 2478, 1300, 1431, 1520, 1217]),
        (1, MATOUTAN_PARK, JINGHE, [1975, 1120]),
    ], "34.609", base=800, card=720)


def test_chinese_medicine_university_to_gangduhuayuan() -> None:
    """Hubei University of Chinese Medicine (Line 5) → Gangduhuayuan (Line 12)? 7 yuan, 6.30.

    Line 5 to Xujiapeng, Line 8 to Wangjiadun, Line 12 on: 18.340 + 1.807 + 4.874 =
    25.021 km, 24-32 km: 700 fen; 630.
    """
    check_trip([
        (5, HUBEI_UNIV_CHINESE_MEDICINE, XUJIAPENG,
         [3717, 1082, 1887, 1651, 1264, 1580, 756, 652, 877, 836, 1056, 1678, 1304]),
        (8, XUJIAPENG, WANGJIADUN, [1128, 679]),
        (12, WANGJIADUN, GANGDUHUAYUAN, [1469, 1824, 1581]),
    ], "25.021", base=700, card=630)


def test_guanggu_5th_road_to_wuhan_station_west_square_on_line_19() -> None:
    """Guanggu 5th Road → Wuhan Railway Station West Square, all Line 19? 6 yuan, 5.40.

    6.739 + 2.102 + 4.657 + 3.398 + 4.948 = 21.844 km, 18-24 km: 600 fen; 540.
    """
    check_trip([(19, GUANGGU_5TH_ROAD, WUHAN_WEST_SQUARE, [6739, 2102, 4657, 3398, 4948])],
               "21.844", base=600, card=540)


def test_houhu_avenue_to_jintai_on_the_yangluo_line() -> None:
    """Houhu Avenue → Jintai, the whole Yangluo Line (21)? 8 yuan, 7.20.

    Eleven measured hops and four estimated ones (2301 m each, SOURCES.md §5): 34.578 km,
    32-40 km: 800 fen; 720.
    """
    check_trip([(21, HOUHU_AVENUE, JINTAI,
                 [1167, 1752, 2059, 2373, 927, 3167, 2283, 2232, 4604, 3796, 1014,
                  2301, 2301, 2301, 2301])],
               "34.578", base=800, card=720)


def test_xunlimen_to_hengdian() -> None:
    """Xunlimen → Hengdian (Line 7's north end)? 7 yuan, 6.30.

    Line 1 to Dazhi Road, 6 to Xianggang Road, 3 to Zhaojiatiao, 8 to Hongtu Boulevard, 2 to
    Julong Boulevard, 7 on (its last hop an estimate, 2616 m): 1.087 + 1.720 + 1.831 + 6.388 +
    5.678 + 11.326 = 28.030 km, 24-32 km: 700 fen; 630.
    """
    check_trip([
        (1, XUNLIMEN, DAZHI_ROAD, [1087]),
        (6, DAZHI_ROAD, XIANGGANG_ROAD, [853, 867]),
        (3, XIANGGANG_ROAD, ZHAOJIATIAO, [887, 944]),
        (8, ZHAOJIATIAO, HONGTU_BOULEVARD, [1276, 1814, 1367, 1931]),
        (2, HONGTU_BOULEVARD, JULONG_BOULEVARD, [3939, 1739]),
        (7, JULONG_BOULEVARD, HENGDIAN, [1809, 4500, 2401, 2616]),
    ], "28.030", base=700, card=630)


def test_zhongjiacun_to_jianghan_road_on_line_6() -> None:
    """Zhongjiacun → Jianghan Road, Line 6 under the river? 3 yuan, 2.70.

    1.011 + 2.027 + 0.745 + 0.866 + 0.952 = 5.601 km, 4-8 km: 300 fen; 270.
    """
    check_trip([(6, ZHONGJIACUN, JIANGHAN_ROAD, [1011, 2027, 745, 866, 952])],
               "5.601", base=300, card=270)


def test_jintan_road_to_military_athletes_village() -> None:
    """Jintan Road → Military Athletes' Village (both Line 8)? 8 yuan, 7.20.

    Line 8 to Xujiapeng, Line 7 to Yezhihu (shorter than Line 8 through the middle), Line 8's
    two estimated hops (2420 m each): 12.133 + 15.512 + 4.840 = 32.485 km, 32-40 km: 800; 720.
    """
    check_trip([
        (8, JINTAN_ROAD, XUJIAPENG, [774, 1931, 1367, 1814, 1276, 1746, 3225]),
        (7, XUJIAPENG, YEZHIHU, [1724, 1913, 1087, 1004, 1567, 1892, 1278, 2212, 1051, 1784]),
        (8, YEZHIHU, MILITARY_ATHLETES_VILLAGE, [2420, 2420]),
    ], "32.485", base=800, card=720)


def test_jiang_an_road_to_gediannan_in_ezhou() -> None:
    """Jiang'an Road → Gediannan Railway Station (in Ezhou, a Wuhan line)? 8 yuan, 7.20.

    Line 11 to Huquan, Line 2 to Optics Valley Square, Line 11 on (five estimated hops:
    4 × 2254 + 3700): 8.987 + 2.847 + 27.313 = 39.147 km, 32-40 km: 800 fen; 720.
    """
    check_trip([
        (11, JIANG_AN_ROAD, HUQUAN, [1398, 2448, 1230, 2164, 1747]),
        (2, HUQUAN, OPTICS_VALLEY_SQUARE, [1428, 1419]),
        (11, OPTICS_VALLEY_SQUARE, GEDIANNAN,
         [1848, 2540, 1497, 1809, 1501, 1005, 1274, 902, 1190, 1031,
          2254, 2254, 2254, 2254, 3700]),
    ], "39.147", base=800, card=720)


def test_hannan_general_airport_to_wuhan_station_west_square_the_longest_trip() -> None:
    """Hannan General Airport → Wuhan Railway Station West Square, the network's longest? 12, 10.80.

    Line 16 (ten of its thirteen hops estimated), 6, 4, 2, 11, 19: 36.516 + 6.075 + 7.613 +
    8.026 + 11.474 + 21.844 = 91.548 km, 90-110 km: 1200 fen; 1080.
    """
    check_trip([
        (16, HANNAN_GENERAL_AIRPORT, SOUTH_EXPO_CENTRE,
         [2110, 2110, 3316, 3316, 3316, 3316, 3316, 3316, 3316, 3316, 2153, 1989, 1626]),
        (6, SOUTH_EXPO_CENTRE, ZHONGJIACUN, [959, 1497, 886, 1558, 1175]),
        (4, ZHONGJIACUN, ZHONGNAN_ROAD, [689, 3301, 885, 713, 913, 1112]),
        (2, ZHONGNAN_ROAD, OPTICS_VALLEY_SQUARE, [1406, 1242, 1139, 1392, 1428, 1419]),
        (11, OPTICS_VALLEY_SQUARE, GUANGGU_5TH_ROAD, [1848, 2540, 1497, 1809, 1501, 1005, 1274]),
        (19, GUANGGU_5TH_ROAD, WUHAN_WEST_SQUARE, [6739, 2102, 4657, 3398, 4948]),
    ], "91.548", base=1200, card=1080)
    d = reg().distances(NETWORK)
    assert int(d.max()) == 91_548


def test_wuhan_railway_station_to_wuchang_east_square_is_not_wuchang_railway_station() -> None:
    """Wuhan Railway Station → East Square of Wuchang Railway Station? 5 yuan, 4.50.

    OSM names the square apart from Wuchang Railway Station, so it stays a station of its own
    (lines 11 and 12): Line 4 to Yuanlin Road, Line 12 on: 4.704 + 10.954 = 15.658 km; 500, 450.
    """
    check_trip([
        (4, WUHAN_RAILWAY_STATION, YUANLIN_ROAD, [836, 1128, 1612, 1128]),
        (12, YUANLIN_ROAD, WUCHANG_EAST_SQUARE, [1824, 1469, 1132, 2927, 1085, 1287, 1230]),
    ], "15.658", base=500, card=450)
    assert WUCHANG_EAST_SQUARE != WUCHANG_RAILWAY_STATION
    assert not set(lines_at(WUCHANG_EAST_SQUARE)) & set(lines_at(WUCHANG_RAILWAY_STATION))


def test_wuhan_business_district_to_zongguan_is_the_first_band() -> None:
    """Wuhan Business District → Zongguan on Line 3? 2 yuan, 1.80: 1.788 + 0.873 = 2.661 km."""
    check_trip([(3, WUHAN_BUSINESS_DISTRICT, ZONGGUAN, [1788, 873])], "2.661", base=200,
               card=180)


# --- The whole network ------------------------------------------------------------------------


def lines_at(stop: int) -> list[int]:
    return [k[1] for k in reg().networks[NETWORK].lines if stop in reg().lines[k].stops]


def test_every_ordered_pair_of_the_284_stations_prices_on_both_paths() -> None:
    """One trip per ordered station pair (a → a included), one day, priced once by each path.

    Every trip is COMPLETE, its base fare is the slow twin's (``tariffs.fares``) band over the
    registry's shortest path, and the reference and fast paths agree on every leg.
    """
    stops = np.array(reg().networks[NETWORK].stops, dtype=np.int64)
    n = len(stops)
    assert n == 284
    entry, exit_ = np.repeat(stops, n), np.tile(stops, n)
    first_line = {s: lines_at(int(s))[0] for s in stops}
    k = n * n
    card = np.arange(1, k + 1, dtype=np.uint64)
    cols = {
        "operator": np.full(2 * k, METRO), "device_id": np.repeat([1, 2], k),
        "device_seq": np.tile(np.arange(1, k + 1), 2), "card_id": np.tile(card, 2),
        "card_seq": np.repeat([1, 2], k), "issuer": np.full(2 * k, WUHAN_TONG),
        "product": np.full(2 * k, int(Product.ORDINARY)), "media": np.full(2 * k, int(Media.CARD)),
        "ts_ms": np.repeat([local_ms(DAY, 8), local_ms(DAY, 11)], k),
        "city": np.array([reg().stops[int(s)].city for s in np.concatenate([entry, exit_])]),
        "line": np.array([first_line[s] for s in np.concatenate([entry, exit_])]),
        "stop": np.concatenate([entry, exit_]),
        "tap_type": np.repeat([int(TapType.ENTRY), int(TapType.EXIT)], k),
        "debited_fen": np.full(2 * k, ACCOUNT_BASED),
    }
    taps = pa.Table.from_arrays(
        [pa.array(cols[f.name]).cast(f.type) for f in TAP_SCHEMA], schema=TAP_SCHEMA)
    fast = match_and_price_fast(taps, tariffs())
    reference = match_and_price(taps, tariffs())
    assert fast.equals(reference)
    assert fast.num_rows == k
    assert set(fast.column("status").to_pylist()) == {int(LegStatus.COMPLETE)}

    order = np.argsort(fast.column("card_id").to_numpy())
    base = fast.column("base_fen").to_numpy()[order]
    fare = network_fare(tariffs().version_for(420100, DAY), NETWORK)
    band = {(int(a), int(b)): base_fare_network(fare, reg(), int(a), int(b))
            for a, b in zip(entry, exit_, strict=True)}
    assert base.tolist() == [band[(int(a), int(b))] for a, b in zip(entry, exit_, strict=True)]
    assert base.max() == 1200 and base.min() == 200


def test_the_derived_network_is_the_reference_data_unscaled_with_estimates_marked() -> None:
    """13 lines, 284 stations, 42 interchanges; hop metres as the reference gives them (no
    × 1.15), each estimated hop marked by its source; old stop ids kept."""
    net = reg().networks[NETWORK]
    assert sorted(k[1] for k in net.lines) == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 16, 19, 21]
    assert len(net.stops) == 284
    assert sum(len(lines_at(s)) > 1 for s in net.stops) == 42
    with open(METRO_DIR / "stations.csv", encoding="utf-8") as fh:
        osm_ids = [r["station_id"] for r in csv.DictReader(fh)]
    with open(METRO_DIR / "line_stations.csv", encoding="utf-8") as fh:
        reference = {(int(r["line"]), int(r["seq"])): r for r in csv.DictReader(fh)}
    with open(DEFAULT_REGISTRY_DIR / "line_stops.csv", encoding="utf-8") as fh:
        derived = {(int(r["line"]), int(r["seq"])): r for r in csv.DictReader(fh)
                   if int(r["operator"]) == METRO}
    assert derived.keys() == reference.keys()
    for key, r in derived.items():
        src = reference[key]
        assert int(r["metres_from_previous"]) == int(src["metres_from_previous"]), key
        assert r["source"] == src["distance_source"], key
        assert int(r["stop"]) == 100_000 + osm_ids.index(src["station_id"]) + 1, key
    estimated = [k for k, r in derived.items() if r["source"].startswith("estimated_")]
    assert len(estimated) == 38
    assert {r["source"] for r in derived.values()} == {
        "line_start", "osm_along_track", "estimated_section_length",
        "estimated_straight_x_line_ratio"}
    # Ids of the first version keep naming the same stations.
    stops = {s.stop: s for s in reg().stops.values()}
    assert (stops[100001].name, stops[100091].name, stops[100144].name) == (
        "Hankou North", "Wuhan Railway Station", "Gediannan Railway Station")
    assert stops[100144].city == 420700  # Gediannan lies in Ezhou


def test_the_attribution_travels_with_the_derived_data() -> None:
    for path in (DEFAULT_REGISTRY_DIR / "README.md", METRO_DIR / "SOURCES.md"):
        text = path.read_text(encoding="utf-8")
        assert "© OpenStreetMap contributors" in text and "ODbL" in text, path


def test_stations_osm_names_apart_stay_apart() -> None:
    """Wuhan Railway Station (L4), its East Square (L5) and West Square (L19) are three stations
    with no line in common; a trip between two of them is a priced trip, not a same-station exit.
    """
    east, west = station("wuhan-railway-station-east-square"), station(
        "wuhan-railway-station-west-square")
    assert west == WUHAN_WEST_SQUARE
    assert (lines_at(WUHAN_RAILWAY_STATION), lines_at(east), lines_at(west)) == ([4], [5], [19])
    index = reg().stop_index(NETWORK)
    assert int(reg().distances(NETWORK)[index[east], index[west]]) > 0


def station(osm_id: str) -> int:
    with open(DEFAULT_REGISTRY_DIR / "stops.csv", encoding="utf-8") as fh:
        return next(int(r["stop"]) for r in csv.DictReader(fh) if r["source"] == f"osm:{osm_id}")


# --- Generated days ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metro_legs() -> dict[str, np.ndarray]:
    day = generate(DAY, 60_000, 15, tariffs(), price=match_and_price_fast)
    legs = match_and_price_fast(day.table.filter(pa.array(day.accepted_mask)), tariffs())
    on = (legs.column("network").to_numpy() == NETWORK) & (
        legs.column("status").to_numpy() == int(LegStatus.COMPLETE))
    return {c: legs.column(c).to_numpy()[on] for c in ("board_stop", "exit_stop")}


def test_generated_days_ride_every_line_and_transfer_off_and_onto_each(
        metro_legs: dict[str, np.ndarray]) -> None:
    """For every line: trips that board at a station only it serves and leave the line
    (a transfer inside the network), and trips that arrive at such a station from elsewhere."""
    board, exit_ = metro_legs["board_stop"], metro_legs["exit_stop"]
    for key in reg().networks[NETWORK].lines:
        served = np.array(reg().lines[key].stops)
        only = [s for s in served.tolist() if lines_at(s) == [key[1]]]
        on_line = np.isin(board, only) & ~np.isin(exit_, served)
        assert on_line.any(), f"no generated trip transfers off line {key[1]}"
        assert (np.isin(exit_, only) & ~np.isin(board, served)).any(), key[1]


def test_generated_days_weigh_busy_lines_more(metro_legs: dict[str, np.ndarray]) -> None:
    """Line 2, the busiest, draws more entries per station than the Yangluo Line and Line 16."""
    board = metro_legs["board_stop"]

    def per_station(line: int) -> float:
        stops = [s for s in reg().lines[(METRO, line)].stops if lines_at(s) == [line]]
        return float(np.isin(board, stops).sum()) / len(stops)

    assert LINE_WEIGHT[(METRO, 2)] > LINE_WEIGHT[(METRO, 21)]
    assert per_station(2) > 3 * per_station(21)
    assert per_station(2) > 3 * per_station(16)
