"""Parties of settlement (SPEC §2): a party is the pair (role, code), named through the registry."""

from __future__ import annotations

from typing import NamedTuple

from tariffs.registry import Registry
from tariffs.vocab import CLEARING_CENTRE_CODE, PartyRole

ROLE_TAGS: dict[PartyRole, str] = {
    PartyRole.ISSUER: "ISS",
    PartyRole.OPERATOR: "OPR",
    PartyRole.GOVERNMENT: "GOV",
    PartyRole.CENTRE: "CTR",
}


class Party(NamedTuple):
    """One party: a company that issues cards and runs buses is two parties (SPEC §2).

    A NamedTuple so that parties sort by (role, code) and key dicts without ceremony.
    """

    role: PartyRole
    code: int

    @property
    def tag(self) -> str:
        """A stable short id used in account codes and file names, e.g. ``OPR-101``."""
        return f"{ROLE_TAGS[self.role]}-{self.code}"


def issuer(code: int) -> Party:
    return Party(PartyRole.ISSUER, int(code))


def operator(code: int) -> Party:
    return Party(PartyRole.OPERATOR, int(code))


def government(city: int) -> Party:
    """SPEC §2: one government per city; its code is the city's GB/T 2260 code."""
    return Party(PartyRole.GOVERNMENT, int(city))


CENTRE = Party(PartyRole.CENTRE, CLEARING_CENTRE_CODE)


def parse_tag(tag: str) -> Party:
    """The inverse of ``Party.tag``; ValueError names the expected shape."""
    by_tag = {v: k for k, v in ROLE_TAGS.items()}
    head, _, code = tag.partition("-")
    if head not in by_tag or not code.isdigit():
        raise ValueError(
            f"not a party tag: {tag!r} (expected e.g. ISS-1, OPR-101, GOV-420100, CTR-0)"
        )
    return Party(by_tag[head], int(code))


def party_name(party: Party, registry: Registry | None) -> str:
    """A readable name from the registry, falling back to the tag for unknown codes."""
    if party.role == PartyRole.CENTRE:
        return "Clearing centre 清分中心"
    if registry is not None:
        if party.role == PartyRole.ISSUER and party.code in registry.issuers:
            return registry.issuers[party.code].name
        if party.role == PartyRole.OPERATOR and party.code in registry.operators:
            return registry.operators[party.code].name
        if party.role == PartyRole.GOVERNMENT and party.code in registry.cities:
            city = registry.cities[party.code]
            return f"{city.name} {city.name_zh} government"
    return party.tag
