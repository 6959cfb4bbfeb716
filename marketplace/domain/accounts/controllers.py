"""HTTP: sign-up, sessions, the current account and its privacy preferences."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from sqlalchemy.orm import Session

from marketplace.auth import Principal
from marketplace.domain.accounts import services
from marketplace.domain.accounts.schemas import (
    AccountOut,
    LoginIn,
    PrivacyPreferencesIn,
    SessionOut,
    SignupIn,
)
from marketplace.settings import Settings


class AccountController(Controller):
    path = "/api/v1"
    tags = ["accounts"]

    @post("/accounts", exclude_from_auth=True, sync_to_thread=True, summary="Sign up")
    def signup(self, data: SignupIn, db_session: Session) -> AccountOut:
        account = services.signup(db_session, data)
        return services.account_out(db_session, account)

    @post("/sessions", exclude_from_auth=True, sync_to_thread=True, summary="Sign in")
    def login(self, data: LoginIn, state: State, settings: Settings) -> SessionOut:
        token, row = services.sign_in(state.db, settings, data.email, data.password)
        with state.db.session(readonly=True) as session:
            return services.session_out(session, token, row, services.get_account(session, row.account_id))

    @delete("/sessions/current", sync_to_thread=True, summary="Sign out (revokes the token)")
    def logout(self, request: Request[Principal, Any, Any], db_session: Session) -> None:
        services.revoke_token(db_session, request.user.token_id)

    @get("/me", sync_to_thread=True, summary="The signed-in account")
    def me(self, request: Request[Principal, Any, Any], db_session: Session) -> AccountOut:
        return services.account_out(db_session, services.get_account(db_session, request.user.account_id))

    @put("/me/privacy", sync_to_thread=True, summary="Object to (or allow) AI processing of my data")
    def privacy(self, request: Request[Principal, Any, Any], data: PrivacyPreferencesIn,
                db_session: Session) -> AccountOut:
        account = services.set_ai_objection(db_session, request.user.account_id, data.ai_processing_objection)
        return services.account_out(db_session, account)
