"""Closed vocabularies whose integers travel in arrays, files and the database (SPEC §3, §5)."""

from __future__ import annotations

import enum


class Mode(enum.IntEnum):
    """The kind of vehicle a line runs; a tariff prices products per mode."""

    BUS = 0  # city and county buses, flat fare
    METRO = 1  # entry-exit rail network
    FERRY = 2  # river ferries, flat fare
    INTERCITY = 3  # intercity coach, usually an entry-exit distance-priced network


class Product(enum.IntEnum):
    """Rider category printed on the card (GTFS-Fares v2: rider category)."""

    ORDINARY = 0  # adult, no concession
    STUDENT = 1  # school and university students
    SENIOR = 2  # seniors (Wuhan: 65 and over)
    DISABLED = 3  # registered disabled riders
    OTHER = 4  # other concessions (military, veterans, ...)


class Media(enum.IntEnum):
    """The carrier of the card (GTFS-Fares v2: fare media)."""

    CARD = 0  # physical card
    SHAPED_CARD = 1  # 异形卡: key fob, pendant, ...
    NFC_PHONE = 2  # phone NFC virtual card
    WEARABLE = 3  # watch or band
    SOCIAL_SECURITY = 4  # third-generation social-security card with the Wuhan Tong function
    QR_CODE = 5  # account-based QR code


class Apportionment(enum.IntEnum):
    """How a chain's revenue is shared between its legs (SPEC §7)."""

    LATER_LEG = 0  # each leg keeps its own charged amount
    PRO_RATA = 1  # shared by base fare, largest remainder


class PartyRole(enum.IntEnum):
    """The four kinds of party that settlement moves money between (SPEC §2)."""

    ISSUER = 0  # holds the cards' stored value
    OPERATOR = 1  # runs lines, earns revenue
    GOVERNMENT = 2  # one per city, funds subsidised discounts
    CENTRE = 3  # the clearing centre, collects fees


CLEARING_CENTRE_CODE = 0  # the only party of role CENTRE is (CENTRE, 0)


def parse_enum(kind: type[enum.IntEnum], name: str) -> int:
    """Map a data-file spelling ("bus", "student") to its integer; KeyError names the choices."""
    try:
        return int(kind[name.upper()])
    except KeyError:
        choices = ", ".join(m.name.lower() for m in kind)
        raise KeyError(f"unknown {kind.__name__.lower()} {name!r} (one of: {choices})") from None
