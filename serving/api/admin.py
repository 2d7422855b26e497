"""Who am I, tokens (admin) and the audit log (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from serving.api.deps import Admin, AnyUser, StoreDep
from serving.auth import create_token, revoke_token
from pipelines.errors import NotFoundError

router = APIRouter(tags=["admin"])


class TokenIn(BaseModel):
    role: Literal["reader", "submitter", "admin"]
    name: str | None = Field(default=None, max_length=100)


@router.get("/me", summary="The calling token's name and role")
def me(who: AnyUser) -> dict:
    return {"name": who.name, "role": who.role, "token_id": who.token_id}


@router.post("/tokens", status_code=201, summary="Create a token (shown once)")
def new_token(body: TokenIn, who: Admin, request: Request) -> dict:
    token, row = create_token(request.app.state.db, request.app.state.settings.secret_key, body.role, body.name,
                              created_by=who)
    return {"token": token, "id": row.id, "name": row.name, "role": row.role}


@router.delete("/tokens/{token_id}", status_code=200, summary="Revoke a token")
def delete_token(token_id: int, who: Admin, request: Request) -> dict:
    if not revoke_token(request.app.state.db, token_id, who):
        raise NotFoundError(f"no active token with id {token_id}")
    return {"revoked": token_id}


@router.get("/audit", summary="The audit log, newest first")
def audit(
    who: Admin,
    store: StoreDep,
    job_id: Annotated[str | None, Query(max_length=36)] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict:
    return store.audit_log(job_id=job_id, actor=actor, action=action, limit=limit, offset=offset)
