"""Accounts: sign-up (with referral attribution), sign-in with rate limiting, sign-out."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import (
    Account,
    AuthToken,
    CategoryExample,
    LoginFailure,
    PartnerProfile,
    ProviderProfile,
    Referral,
    Role,
    Task,
)
from marketplace.domain.accounts.schemas import AccountOut, SessionOut, SignupIn
from marketplace.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from marketplace.security import (
    hash_password,
    hash_token,
    is_valid_email,
    keyed_hash,
    new_referral_code,
    new_token,
    normalize_email,
    verify_password,
)
from marketplace.settings import Settings


def active_accounts(session: Session, ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``ids`` whose account is open (primary-key lookups)."""
    if not ids:
        return set()
    return set(session.scalars(select(Account.id).where(Account.id.in_(list(ids)), Account.is_active.is_(True))))


def account_out(session: Session, account: Account) -> AccountOut:
    out = AccountOut(
        id=str(account.id), email=account.email, role=account.role.value, display_name=account.display_name,
        created_at=account.created_at, ai_processing_objection=account.ai_processing_objection,
    )
    if account.role is Role.PARTNER and account.partner_profile is not None:
        out.referral_code = account.partner_profile.referral_code
    if account.role is Role.CUSTOMER:
        out.referred_by_partner = session.scalar(
            select(func.count()).select_from(Referral).where(Referral.customer_id == account.id)
        ) > 0
    return out


def _check_password(password: str, email: str) -> None:
    if not password.strip():
        raise InvalidInput("Password is blank.", errors=[{"field": "password", "message": "must not be blank"}])
    if password.lower() == email or len(set(password)) < 4:
        raise InvalidInput("Password is too easy to guess.",
                           errors=[{"field": "password", "message": "too easy to guess"}])


def create_account(session: Session, email: str, password: str, role: Role, display_name: str) -> Account:
    email = normalize_email(email)
    if not is_valid_email(email):
        raise InvalidInput("Email is not a valid address.", errors=[{"field": "email", "message": "not a valid email address"}])
    display_name = " ".join(display_name.split())
    if not display_name:
        raise InvalidInput("Display name is blank.", errors=[{"field": "display_name", "message": "must not be blank"}])
    _check_password(password, email)
    # Hashed before the first query: on SQLite that query begins the write transaction, and the hash (~0.1 s of
    # argon2) would hold every other writer back.
    password_hash = hash_password(password)
    if session.scalar(select(Account.id).where(Account.email == email)) is not None:
        raise Conflict("An account with this email already exists.",
                       errors=[{"field": "email", "message": "already registered"}])
    account = Account(email=email, password_hash=password_hash, role=role, display_name=display_name)
    session.add(account)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent sign-up with the same email
        raise Conflict("An account with this email already exists.",
                       errors=[{"field": "email", "message": "already registered"}]) from exc
    if role is Role.PROVIDER:
        session.add(ProviderProfile(account_id=account.id))
    elif role is Role.PARTNER:
        session.add(PartnerProfile(account_id=account.id, referral_code=_unique_code(session)))
    session.flush()
    session.refresh(account)
    return account


def _unique_code(session: Session) -> str:
    while True:
        code = new_referral_code()
        if session.scalar(select(PartnerProfile.account_id).where(PartnerProfile.referral_code == code)) is None:
            return code


def signup(session: Session, data: SignupIn) -> Account:
    partner_id: uuid.UUID | None = None
    code = (data.referral_code or "").strip().upper()
    if code:
        if data.role != "customer":
            raise InvalidInput("Only customers sign up with a referral code.",
                               errors=[{"field": "referral_code", "message": "only for customer accounts"}])
        partner_id = session.scalar(select(PartnerProfile.account_id).where(PartnerProfile.referral_code == code))
        if partner_id is None:
            raise InvalidInput("Referral code not found.",
                               errors=[{"field": "referral_code", "message": "no partner has this code"}])
    account = create_account(session, data.email, data.password, Role(data.role), data.display_name)
    if partner_id is not None:
        attribute_referral(session, partner_id, account.id)
    return account


def attribute_referral(session: Session, partner_id: uuid.UUID, customer_id: uuid.UUID) -> bool:
    """Attribute a customer to a partner for good; the first partner wins. Returns False if already attributed."""
    if session.scalar(select(Referral.id).where(Referral.customer_id == customer_id)) is not None:
        return False
    with session.begin_nested():
        session.add(Referral(partner_id=partner_id, customer_id=customer_id))
    return True


def failure_key(settings: Settings, email: str) -> str:
    return keyed_hash(settings.secret_key, "login", normalize_email(email))


def check_rate_limit(session: Session, settings: Settings, email: str, allowed: int | None = None) -> None:
    window_start = now() - timedelta(minutes=settings.login_window_minutes)
    failures = session.scalar(
        select(func.count()).select_from(LoginFailure)
        .where(LoginFailure.email_key == failure_key(settings, email), LoginFailure.at > window_start)
    )
    if failures >= (settings.login_max_failures if allowed is None else allowed):
        retry = settings.login_window_minutes * 60
        raise TooManyAttempts(
            f"Too many failed sign-ins for this email. Try again in {settings.login_window_minutes} minutes.",
            headers={"Retry-After": str(retry)},
        )


def record_attempt(session: Session, settings: Settings, email: str) -> int:
    """Count an attempt as failed until it succeeds (see the sign-in controller)."""
    row = LoginFailure(email_key=failure_key(settings, email))
    session.add(row)
    session.flush()
    return row.id


def forget_attempt(session: Session, attempt_id: int) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.id == attempt_id))


def authenticate(session: Session, settings: Settings, email: str, password: str) -> Account | None:
    account = session.scalar(select(Account).where(Account.email == normalize_email(email)))
    ok = verify_password(account.password_hash if account else None, password)
    if not ok or account is None or not account.is_active:
        return None
    return account


def sign_in(db: Any, settings: Settings, email: str, password: str) -> tuple[str, AuthToken]:
    """Check the password and issue a token, under the per-email limit on failed attempts.

    Each attempt is recorded and committed as failed *before* the password is checked, then counted:
    parallel guesses see each other's rows, so no more than the limit are ever evaluated. A successful
    attempt removes its own row. A blocked email is not recorded again, so blocking does not extend.
    Raises TooManyAttempts, or Unauthenticated for a wrong email or password. Runs its own transactions.
    """
    with db.session(readonly=True) as session:
        check_rate_limit(session, settings, email)
    with db.session() as session:
        attempt = record_attempt(session, settings, email)
    with db.session(readonly=True) as session:
        check_rate_limit(session, settings, email, allowed=settings.login_max_failures + 1)
        account = authenticate(session, settings, email, password)
    if account is None:
        raise invalid_credentials()
    with db.session() as session:
        forget_attempt(session, attempt)
        return issue_token(session, settings, get_account(session, account.id))


def issue_token(session: Session, settings: Settings, account: Account) -> tuple[str, AuthToken]:
    token = new_token()
    row = AuthToken(account_id=account.id, token_hash=hash_token(token),
                    expires_at=now() + timedelta(hours=settings.token_ttl_hours))
    session.add(row)
    session.flush()
    return token, row


def session_out(session: Session, token: str, row: AuthToken, account: Account) -> SessionOut:
    return SessionOut(token=token, expires_at=row.expires_at, account=account_out(session, account))


def revoke_token(session: Session, token_id: uuid.UUID) -> None:
    session.execute(update(AuthToken).where(AuthToken.id == token_id, AuthToken.revoked_at.is_(None))
                    .values(revoked_at=now()))


def get_account(session: Session, account_id: uuid.UUID) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound("Account not found.")
    return account


def set_ai_objection(session: Session, account_id: uuid.UUID, objection: bool) -> Account:
    """Record the customer's objection to AI processing (or its withdrawal). Objecting also takes their tasks
    out of what the router learns from: the examples staff placements made of them go (the taxonomy version
    moves, so the next refit fits without them). Withdrawing the objection does not bring those back."""
    account = get_account(session, account_id)
    account.ai_processing_objection = objection
    if objection:
        session.execute(delete(CategoryExample).where(
            CategoryExample.task_id.in_(select(Task.id).where(Task.customer_id == account_id))))
    session.flush()
    return account


def purge_login_failures(session: Session, older_than: timedelta) -> int:
    return session.execute(delete(LoginFailure).where(LoginFailure.at < now() - older_than)).rowcount or 0


def invalid_credentials() -> Unauthenticated:
    return Unauthenticated("Email or password is wrong.")
