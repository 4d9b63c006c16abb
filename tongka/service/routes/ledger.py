"""The ledger over HTTP: balances and verification, for finance and auditors (the same use
cases as ``tongka ledger balances`` and ``tongka ledger verify``; neither changes anything)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from settlement.ledger import account_balances, positions_from_balances
from settlement.parties import party_name
from tongka.access import Principal, Role
from tongka.ledger_check import verify
from tongka.service.deps import CentreDep, role_in
from tongka.service.problems import PROBLEM_SCHEMA

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])
Overseer = Annotated[
    Principal, Depends(role_in(Role.FINANCE, Role.AUDITOR, what="read or verify the ledger"))
]
REFUSED: dict[int | str, dict[str, Any]] = {403: PROBLEM_SCHEMA}


class AccountOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    account: str = Field(description="The account code, e.g. OPR-101:REVENUE.")
    party: str
    party_name: str
    kind: Literal["revenue", "fee", "subsidy", "rebate"]
    balance_fen: int = Field(description="Debit positive, credit negative.")


class PositionOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    party: str
    party_name: str
    net_fen: int = Field(description="Owed minus owes over every settled period: minus the "
                         "sum of the party's accounts.")


class BalancesOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    accounts: list[AccountOut]
    positions: list[PositionOut]
    sum_fen: int = Field(description="The sum of every balance: 0 in a sound ledger.")


class VerifyOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    verified: bool = Field(description="Every entry balances and the balances equal a fresh "
                           "recomputation of every settled day and closed month.")
    problems: list[str]


@router.get("/balances", summary="Every account's balance and each party's net position",
            responses=REFUSED)
def balances(centre: CentreDep, _: Overseer) -> BalancesOut:
    registry = centre.tariffs.registry
    found = account_balances(centre.engine)
    return BalancesOut(
        accounts=[
            AccountOut(account=key.code, party=key.party.tag,
                       party_name=party_name(key.party, registry),
                       kind=key.kind.name.lower(),  # type: ignore[arg-type]
                       balance_fen=fen)
            for key, fen in sorted(found.items(), key=lambda kv: kv[0].code)
        ],
        positions=[
            PositionOut(party=p.tag, party_name=party_name(p, registry), net_fen=fen)
            for p, fen in positions_from_balances(found).items()
        ],
        sum_fen=sum(found.values()),
    )


@router.post("/verify", summary="Verify the ledger against a fresh recomputation (read-only)",
             responses=REFUSED)
def verify_ledger(centre: CentreDep, _: Overseer) -> VerifyOut:
    """The problems found are data, not an error: 200 either way, ``verified`` says which."""
    problems = verify(centre.engine, centre.home, centre.tariffs)
    return VerifyOut(verified=not problems, problems=problems)
