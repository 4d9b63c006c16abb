"""Builders for settlement tests: one literal leg with defaults, and hypothesis days of legs.

Imported by the settlement test modules (pytest puts ``tests/`` on the path); it defines no
tests itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import strategies as st

from clearing.legs import NO_CHAIN, Apportionment, DebitKind, Leg, LegStatus
from clearing.service_day import day_number, local_ms
from tariffs.load import TariffSet, load_tariff_set
from tariffs.vocab import Media, Product

DAY = dt.date(2024, 5, 14)  # Wuhan prices this day with its 2020 pro_rata version
TARIFFS: TariffSet = load_tariff_set()
REGISTRY = TARIFFS.registry

_BASE = Leg(
    service_day=day_number(DAY),
    card_id=1,
    issuer=1,
    product=0,
    honoured_product=0,
    media=0,
    operator=101,
    line=1,
    mode=0,
    area=420100,
    network=0,
    status=int(LegStatus.FLAT),
    board_stop=0,
    exit_stop=0,
    board_ts_ms=local_ms(DAY, 8),
    last_ts_ms=local_ms(DAY, 8),
    board_card_seq=1,
    board_device_id=1,
    version=day_number(dt.date(2020, 12, 1)),
    apportionment=int(Apportionment.PRO_RATA),
    chain=0,
    transfer_no=0,
    base_fen=200,
    product_fare_fen=160,
    transfer_fare_fen=160,
    computed_fen=160,
    card_discount_fen=40,
    transfer_discount_fen=0,
    cap_discount_fen=0,
    charged_fen=160,
    mismatch_fen=0,
    debit_kind=int(DebitKind.STORED_VALUE),
)


def leg(**fields: int) -> Leg:
    """A Wuhan bus leg of ``DAY`` (Wuhan Tong, ordinary, 200 base, 160 charged) with overrides."""
    return dataclasses.replace(_BASE, **fields)


def chain_legs(
    charged: list[int], base: list[int], mode: Apportionment, **common: int
) -> list[Leg]:
    """One chain's legs in order, a minute apart, transfer_no 0, 1, ..."""
    return [
        leg(
            charged_fen=c,
            base_fen=b,
            computed_fen=c,
            apportionment=int(mode),
            transfer_no=i,
            board_ts_ms=local_ms(DAY, 8, i),
            last_ts_ms=local_ms(DAY, 8, i),
            board_card_seq=i + 1,
            card_discount_fen=0,
            product_fare_fen=c,
            transfer_fare_fen=c,
            **common,
        )
        for i, (c, b) in enumerate(zip(charged, base, strict=True))
    ]


def _ops_by_city() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for code, op in sorted(REGISTRY.operators.items()):
        out.setdefault(op.city, []).append(code)
    return out


OPS_BY_CITY = _ops_by_city()


@st.composite
def day_legs(
    draw: st.DrawFn, day: dt.date = DAY, max_cards: int = 5, min_cards: int = 0
) -> list[Leg]:
    """A plausible service day of priced legs for settlement: cards of any issuer and product,
    chains of 1-4 legs within one tariff area (any of its operators), penalty legs, stored-value
    legs whose readers charged something else, and both apportionment modes."""
    legs: list[Leg] = []
    n_cards = draw(st.integers(min_cards, max_cards))
    card_ids = draw(
        st.lists(st.integers(1, 2**64 - 1), min_size=n_cards, max_size=n_cards, unique=True)
    )
    for card_id in card_ids:
        iss = draw(st.sampled_from(sorted(REGISTRY.issuers)))
        product = draw(st.sampled_from(list(Product)))
        media = draw(st.sampled_from(list(Media)))
        ts = local_ms(day, 6)
        seq = 0
        chain_no = 0
        for _ in range(draw(st.integers(1, 4))):
            city = draw(st.sampled_from(sorted(OPS_BY_CITY)))
            version = TARIFFS.version_for(city, day)
            mode = draw(
                st.sampled_from(
                    [
                        Apportionment.PRO_RATA
                        if version.apportionment == "pro_rata"
                        else Apportionment.LATER_LEG,
                        Apportionment.PRO_RATA,
                    ]
                )
            )
            honoured = product if iss in version.concession_issuers else Product.ORDINARY
            penalty = draw(st.integers(0, 7)) == 0
            n_legs = 1 if penalty else draw(st.integers(1, 4))
            for k in range(n_legs):
                ts += draw(st.integers(1, 40)) * 60_000
                seq += 1
                opr = draw(st.sampled_from(OPS_BY_CITY[city]))
                if penalty:
                    base = product_fare = transfer_fare = computed = draw(
                        st.sampled_from([300, 1200])
                    )
                    status, chain = LegStatus.INCOMPLETE, NO_CHAIN
                else:
                    base = draw(st.integers(0, 1500))
                    product_fare = draw(st.integers(0, base))
                    transfer_fare = draw(st.integers(0, product_fare)) if k else product_fare
                    computed = draw(st.integers(0, transfer_fare))
                    status, chain = LegStatus.FLAT, chain_no
                account = draw(st.booleans())
                charged = (
                    computed
                    if account
                    else draw(st.one_of(st.just(computed), st.integers(0, 2000)))
                )
                legs.append(
                    leg(
                        service_day=day_number(day),
                        card_id=card_id,
                        issuer=iss,
                        product=int(product),
                        honoured_product=int(honoured),
                        media=int(media),
                        operator=opr,
                        line=1,
                        area=city,
                        status=int(status),
                        board_ts_ms=ts,
                        last_ts_ms=ts,
                        board_card_seq=seq,
                        version=day_number(version.valid_from),
                        apportionment=int(mode),
                        chain=chain,
                        transfer_no=0 if penalty else k,
                        base_fen=base,
                        product_fare_fen=product_fare,
                        transfer_fare_fen=transfer_fare,
                        computed_fen=computed,
                        card_discount_fen=base - product_fare,
                        transfer_discount_fen=product_fare - transfer_fare,
                        cap_discount_fen=transfer_fare - computed,
                        charged_fen=charged,
                        mismatch_fen=charged - computed,
                        debit_kind=int(DebitKind.ACCOUNT if account else DebitKind.STORED_VALUE),
                    )
                )
            if not penalty:
                chain_no += 1
    return legs
