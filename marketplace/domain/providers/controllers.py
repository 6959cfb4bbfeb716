"""HTTP: a provider's own profile."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, put
from sqlalchemy.orm import Session

from marketplace.auth import Principal, require_role
from marketplace.db.models import Role
from marketplace.domain.providers import services
from marketplace.domain.providers.schemas import ProviderProfileIn, ProviderProfileOut


class ProviderController(Controller):
    path = "/api/v1/providers"
    tags = ["providers"]
    guards = [require_role(Role.PROVIDER)]

    @get("/me", sync_to_thread=True, summary="My provider profile")
    def get_me(self, request: Request[Principal, Any, Any], db_session: Session) -> ProviderProfileOut:
        return services.profile_out(services.get_profile(db_session, request.user.account_id))

    @put("/me", sync_to_thread=True, summary="Replace my provider profile")
    def put_me(self, request: Request[Principal, Any, Any], data: ProviderProfileIn,
               db_session: Session) -> ProviderProfileOut:
        return services.profile_out(services.update_profile(db_session, request.user.account_id, data))
