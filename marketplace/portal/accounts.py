"""Portal pages everyone uses: the front page, sign-up (with a partner's referral code), sign-in, sign-out and
the privacy page with the AI-processing objection switch."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from sqlalchemy.orm import Session

from marketplace.domain.accounts import services as accounts
from marketplace.domain.accounts.schemas import SignupIn
from marketplace.errors import DomainError, TooManyAttempts, Unauthenticated
from marketplace.portal.web import (
    HOME,
    Form,
    FormData,
    Viewer,
    redirect,
    render,
    require,
    safe_next,
    session_cookie,
)
from marketplace.settings import Settings

SIGNUP_ROLES = (("customer", "Customer", "I want to get work done"),
                ("provider", "Provider", "I do work for customers"),
                ("partner", "Partner", "I refer customers and follow their progress"))


class AccountPages(Controller):
    path = "/"

    @get("/", sync_to_thread=True)
    def front(self, request: Request[Any, Any, Any], viewer: Viewer | None) -> Response[Any]:
        if viewer is not None:
            return redirect(viewer.home)
        return render(request, "front.html", viewer)

    @get("/signup", sync_to_thread=True)
    def signup_page(self, request: Request[Any, Any, Any], viewer: Viewer | None,
                    ref: str | None = None) -> Response[Any]:
        code = (ref or "").strip().upper()[:16]
        form = Form({"role": "customer" if code or not viewer else "", "referral_code": code})
        return render(request, "signup.html", viewer, form=form, roles=SIGNUP_ROLES)

    @post("/signup", sync_to_thread=True)
    def signup(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None, state: State,
               settings: Settings) -> Response[Any]:
        form = Form(data)
        role = form.get("role")
        if role not in {r for r, _, _ in SIGNUP_ROLES}:
            form.add("role", "Choose what you will use Relay for")
        for name, label in (("display_name", "Display name"), ("email", "Email"), ("password", "Password")):
            if not form.get(name):
                form.add(name, f"{label} is required")
        if form.get("password") and len(form.get("password")) < 10:
            form.add("password", "Use at least 10 characters")
        if form.get("referral_code") and role and role != "customer":
            form.add("referral_code", "Only customers sign up with a referral code")
        if not form:
            try:
                with state.db.session() as session:
                    account = accounts.signup(session, SignupIn(
                        email=form.get("email"), password=form.values.get("password", ""), role=role,
                        display_name=form.get("display_name"), referral_code=form.get("referral_code") or None))
                    token, _ = accounts.issue_token(session, settings, account)
                    name, home = account.display_name, HOME[account.role]
            except DomainError as exc:
                form.absorb(exc)
            else:
                return redirect(home, settings, f"Welcome to Relay, {name}.",
                                cookies=[session_cookie(settings, token)])
        form.values.pop("password", None)  # never echoed back into the page
        return render(request, "signup.html", viewer, status=422, form=form, roles=SIGNUP_ROLES)

    @get("/signin", sync_to_thread=True)
    def signin_page(self, request: Request[Any, Any, Any], viewer: Viewer | None, settings: Settings,
                    next: str | None = None) -> Response[Any]:
        return render(request, "signin.html", viewer, form=Form({"next": safe_next(next, "")}),
                      demo=demo_accounts() if settings.demo else None)

    @post("/signin", sync_to_thread=True)
    def signin(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None, state: State,
               settings: Settings) -> Response[Any]:
        form = Form(data)
        email, password = form.get("email"), form.values.get("password", "")
        if not email:
            form.add("email", "Email is required")
        if not password:
            form.add("password", "Password is required")
        status = 422
        if not form:
            try:
                token, row = accounts.sign_in(state.db, settings, email, password)
            except Unauthenticated:
                status, form.message = 401, "Email or password is wrong."
                form.add("password", "Email or password is wrong")
            except TooManyAttempts as exc:
                status = 429
                form.absorb(exc)
            else:
                with state.db.session(readonly=True) as session:
                    home = HOME[accounts.get_account(session, row.account_id).role]
                return redirect(safe_next(form.get("next"), home), cookies=[session_cookie(settings, token)])
        form.values.pop("password", None)
        return render(request, "signin.html", viewer, status=status, form=form,
                      demo=demo_accounts() if settings.demo else None)

    @post("/signout", sync_to_thread=True)
    def signout(self, viewer: Viewer | None, db_session: Session, settings: Settings) -> Response[Any]:
        if viewer is not None:
            accounts.revoke_token(db_session, viewer.principal.token_id)
        return redirect("/", settings, "You are signed out.", cookies=[session_cookie(settings, None)])

    @get("/privacy", sync_to_thread=True)
    def privacy_page(self, request: Request[Any, Any, Any], viewer: Viewer | None,
                     db_session: Session) -> Response[Any]:
        account = accounts.get_account(db_session, require(request, viewer).account_id)
        return render(request, "privacy.html", viewer, objection=account.ai_processing_objection)

    @post("/privacy", sync_to_thread=True)
    def privacy(self, request: Request[Any, Any, Any], data: FormData, viewer: Viewer | None,
                db_session: Session, settings: Settings) -> Response[Any]:
        me = require(request, viewer)
        objection = Form(data).get("ai_processing_objection") == "on"
        accounts.set_ai_objection(db_session, me.account_id, objection)
        message = ("Done: our AI will not process your data. Staff place your tasks by hand." if objection
                   else "Done: our on-machine AI may categorise your tasks and draft replies again.")
        return redirect("/privacy", settings, message)


def demo_accounts() -> dict[str, Any]:
    """A few demo people and their shared password, for the sign-in page of a demo server (`make run`)."""
    from marketplace.demo.loader import DEMO_PASSWORD, _json

    people = _json("people.json")
    return {"password": DEMO_PASSWORD, "people": [
        ("Customer", people["customers"][0]["display_name"], people["customers"][0]["email"]),
        ("Provider", people["providers"][0]["display_name"], people["providers"][0]["email"]),
        ("Partner", people["partners"][1]["display_name"], people["partners"][1]["email"]),
    ]}
