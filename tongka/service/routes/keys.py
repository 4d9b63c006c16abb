"""API keys over HTTP, for the admin role only (the same use cases as ``tongka keys``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from tongka.access import KeyInfo, Principal, Role, create_key, list_keys, revoke_key
from tongka.service.deps import CentreDep, role_in

router = APIRouter(prefix="/v1/keys", tags=["keys"])
Admin = Annotated[Principal, Depends(role_in(Role.ADMIN, what="manage API keys"))]


class KeyOut(BaseModel):
    key_id: str
    role: Role
    party: int | None
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(key_id=info.key_id, role=info.role, party=info.party, label=info.label,
                   created_at=info.created_at, revoked_at=info.revoked_at)


class KeyIn(BaseModel):
    role: Role
    party: Annotated[int | None, Field(ge=0, le=2**31 - 1)] = None
    label: Annotated[str, Field(max_length=200)] = ""


class CreatedKeyOut(KeyOut):
    key: str = Field(description="The whole key: shown this once, never stored.")


@router.get("", summary="List API keys (never their secrets)")
def keys(centre: CentreDep, _: Admin) -> list[KeyOut]:
    return [KeyOut.of(k) for k in list_keys(centre.engine)]


@router.post("", status_code=201, summary="Create an API key")
def create(body: KeyIn, centre: CentreDep, _: Admin) -> CreatedKeyOut:
    created = create_key(centre.engine, body.role, party=body.party, label=body.label)
    return CreatedKeyOut(**KeyOut.of(created.info).model_dump(), key=created.key)


@router.delete("/{key_id}", summary="Revoke an API key")
def revoke(key_id: Annotated[str, Field(max_length=24)], centre: CentreDep, _: Admin) -> KeyOut:
    return KeyOut.of(revoke_key(centre.engine, key_id))
