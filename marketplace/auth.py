"""Authentication (bearer tokens) and role guards. Every route is private unless it opts out.

Only the Authorization header is read here: a cookie would let another site's form act as the user (CSRF).
The portal (marketplace.portal) reads its own session cookie, behind CSRF protection.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy import select

from marketplace.clock import now
from marketplace.db.models import Account, AuthToken, Role
from marketplace.errors import Forbidden, Unauthenticated
from marketplace.security import hash_token


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: uuid.UUID
    role: Role
    token_id: uuid.UUID


def _token_from(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        token = _token_from(connection)
        if not token:
            raise Unauthenticated("Send 'Authorization: Bearer <token>' from POST /api/v1/sessions.")
        # Off the event loop: a database wait must not stall every other request.
        found = await anyio.to_thread.run_sync(lookup, connection.app.state.db, token)
        if found is None:
            raise Unauthenticated("The token is unknown, expired or revoked; sign in again.")
        principal, _ = found
        return AuthenticationResult(user=principal, auth=principal.token_id)


def lookup(db: Any, token: str) -> tuple[Principal, str] | None:
    """The principal a live token stands for, and the account's display name (the portal greets by name)."""
    with db.session(readonly=True) as session:
        row = session.execute(
            select(AuthToken.id, Account.id, Account.role, Account.display_name)
            .join(Account, Account.id == AuthToken.account_id)
            .where(
                AuthToken.token_hash == hash_token(token),
                AuthToken.revoked_at.is_(None),
                AuthToken.expires_at > now(),
                Account.is_active.is_(True),
            )
        ).first()
    if row is None:
        return None
    token_id, account_id, role, display_name = row
    return Principal(account_id, Role(role), token_id), display_name


def require_role(*roles: Role) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    allowed = set(roles)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if principal.role not in allowed:
            names = " or ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"This action is for {names} accounts.")

    return guard
