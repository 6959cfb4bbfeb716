"""HTTP: a provider's offers inbox, accept / decline, and the draft proposal for each offer."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from sqlalchemy.orm import Session

from marketplace.auth import Principal, require_role
from marketplace.db.models import OfferStatus, Role
from marketplace.domain.offers import services
from marketplace.domain.offers.schemas import AcceptIn, DeclineIn, DraftOut, OfferOut, OfferPage
from marketplace.settings import Settings


class OfferController(Controller):
    path = "/api/v1/offers"
    tags = ["offers"]
    guards = [require_role(Role.PROVIDER)]

    @get("/", sync_to_thread=True, summary="My offers")
    def list_all(self, request: Request[Principal, Any, Any], db_session: Session, status: OfferStatus | None = None,
             limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
             offset: Annotated[int, Parameter(ge=0)] = 0) -> OfferPage:
        return services.list_offers(db_session, request.user, status, limit, offset)

    @get("/{offer_id:uuid}", sync_to_thread=True, summary="One of my offers")
    def get_one(self, request: Request[Principal, Any, Any], offer_id: uuid.UUID, db_session: Session) -> OfferOut:
        return services.offer_out(db_session, services.get_offer(db_session, request.user, offer_id))

    @post("/{offer_id:uuid}/accept", sync_to_thread=True, status_code=200, summary="Accept (first accept wins)")
    def accept(self, request: Request[Principal, Any, Any], offer_id: uuid.UUID, db_session: Session,
               data: AcceptIn | None = None) -> OfferOut:
        offer = services.accept(db_session, request.user, offer_id, data.proposal if data else None,
                                data.from_draft if data else False)
        return services.offer_out(db_session, offer)

    @post("/{offer_id:uuid}/decline", sync_to_thread=True, status_code=200, summary="Decline with a reason")
    def decline(self, request: Request[Principal, Any, Any], offer_id: uuid.UUID, data: DeclineIn,
                db_session: Session, settings: Settings) -> OfferOut:
        offer = services.decline(db_session, settings, request.user, offer_id, data.reason, data.code,
                                 data.suggested_category)
        return services.offer_out(db_session, offer)

    @get("/{offer_id:uuid}/draft", sync_to_thread=True, summary="The AI draft proposal for this offer")
    def draft(self, request: Request[Principal, Any, Any], offer_id: uuid.UUID, db_session: Session) -> DraftOut:
        d = services.get_draft(db_session, request.user, offer_id)
        return DraftOut(str(d.offer_id), d.text, d.engine, d.model_id, d.created_at)
