"""HTTP: a partner's referral code and referred customers."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import Parameter
from sqlalchemy.orm import Session

from marketplace.auth import Principal, require_role
from marketplace.db.models import Role
from marketplace.domain.partners import services
from marketplace.domain.partners.schemas import ReferralsOut
from marketplace.settings import Settings


class PartnerController(Controller):
    path = "/api/v1/partners"
    tags = ["partners"]
    guards = [require_role(Role.PARTNER)]

    @get("/me/referrals", sync_to_thread=True, summary="Customers I referred and their tasks' status")
    def referrals(self, request: Request[Principal, Any, Any], db_session: Session, settings: Settings,
                  limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
                  offset: Annotated[int, Parameter(ge=0)] = 0) -> ReferralsOut:
        return services.referrals(db_session, settings.secret_key, request.user.account_id, limit, offset)
