"""API tokens: random, shown once, stored as HMAC-SHA256 under the service's secret key, each with a role.

Roles: ``reader`` (see the worklist and studies, record reviews), ``submitter`` (send studies, follow
their status), ``admin`` (everything, plus tokens and the audit log).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from pipelines.errors import AuthError, ForbiddenError, ServingError
from serving.db import Database
from serving.models import ROLES, ApiToken, AuditEvent, utcnow

TOKEN_PREFIX = "prt_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: int
    name: str
    role: str


def hash_token(token: str, secret_key: str) -> str:
    return hmac.new(secret_key.encode(), token.encode(), hashlib.sha256).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ServingError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
    return role


def create_token(db: Database, secret_key: str, role: str, name: str | None = None,
                 created_by: Principal | None = None) -> tuple[str, ApiToken]:
    """A new token with ``role``; returns (the token in clear, shown only now; its stored row)."""
    check_role(role)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    name = (name or f"{role}-{token[len(TOKEN_PREFIX):len(TOKEN_PREFIX) + 6]}").strip()[:100] or role
    row = ApiToken(name=name, role=role, token_hash=hash_token(token, secret_key),
                   prefix=token[:len(TOKEN_PREFIX) + 6], created_at=utcnow())
    with db.session(write=True) as s:
        s.add(row)
        s.flush()
        s.add(AuditEvent(at=utcnow(), actor=created_by.name if created_by else "cli",
                         token_id=created_by.token_id if created_by else None,
                         role=created_by.role if created_by else None, action="token.create",
                         detail={"new_token_id": row.id, "role": role, "name": name}))
    return token, row


def authenticate(db: Database, secret_key: str, authorization: str | None) -> Principal:
    """The principal for an ``Authorization: Bearer <token>`` header, or :class:`AuthError`."""
    if not authorization:
        raise AuthError("missing bearer token", hint="send 'Authorization: Bearer <token>'; "
                                                     "an admin creates one with `preread token create --role reader`")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        raise AuthError("malformed Authorization header", hint="expected 'Bearer <token>'")
    digest = hash_token(token, secret_key)
    with db.session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        raise AuthError("invalid or revoked token")
    return Principal(token_id=row.id, name=row.name, role=row.role)


def require(principal: Principal, *roles: str) -> Principal:
    """``principal`` if its role is among ``roles`` (admin always is), else :class:`ForbiddenError`."""
    if principal.role == "admin" or principal.role in roles:
        return principal
    raise ForbiddenError(f"role {principal.role!r} may not do this", hint=f"needs one of: {', '.join(roles + ('admin',))}")


def revoke_token(db: Database, token_id: int, by: Principal | None = None) -> bool:
    with db.session(write=True) as s:
        row = s.get(ApiToken, token_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        s.add(AuditEvent(at=utcnow(), actor=by.name if by else "cli", token_id=by.token_id if by else None,
                         role=by.role if by else None, action="token.revoke", detail={"token_id": token_id}))
    return True
