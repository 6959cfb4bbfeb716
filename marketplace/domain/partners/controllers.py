"""HTTP: a partner's profile (referral code, expertise) and referred customers."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, put
from litestar.params import Parameter
from sqlalchemy.orm import Session

from marketplace.auth import Principal, require_role
from marketplace.db.models import Role
from marketplace.domain.partners import services
from marketplace.domain.partners.schemas import PartnerProfileIn, PartnerProfileOut, ReferralsOut
from marketplace.settings import Settings


class PartnerController(Controller):
    path = "/api/v1/partners"
    tags = ["partners"]
    guards = [require_role(Role.PARTNER)]

    @get("/me", sync_to_thread=True, summary="My referral code and the categories I assist with")
    def get_me(self, request: Request[Principal, Any, Any], db_session: Session) -> PartnerProfileOut:
        return services.profile_out(db_session, request.user.account_id)

    @put("/me", sync_to_thread=True, summary="Replace the categories I assist with (routing suggests me on them)")
    def put_me(self, request: Request[Principal, Any, Any], data: PartnerProfileIn,
               db_session: Session) -> PartnerProfileOut:
        return services.update_expertise(db_session, request.user.account_id, data)

    @get("/me/referrals", sync_to_thread=True, summary="Customers I referred and their tasks' status")
    def referrals(self, request: Request[Principal, Any, Any], db_session: Session, settings: Settings,
                  limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
                  offset: Annotated[int, Parameter(ge=0)] = 0) -> ReferralsOut:
        return services.referrals(db_session, settings.secret_key, request.user.account_id, limit, offset)
