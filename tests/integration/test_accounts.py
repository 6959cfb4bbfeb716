"""Sign-up, sign-in, sign-out and the rules that protect accounts."""

from __future__ import annotations

from datetime import timedelta

import time_machine

from marketplace.clock import now
from tests.conftest import PASSWORD, Api


def test_signup_normalizes_email_and_rejects_duplicates(api: Api) -> None:
    c = api.client
    r = c.post("/api/v1/accounts", json={"email": "  Ada@Example.COM ", "password": PASSWORD, "role": "customer",
                                         "display_name": "Ada"})
    assert r.status_code == 201
    assert r.json()["email"] == "ada@example.com"
    dup = c.post("/api/v1/accounts", json={"email": "ADA@example.com", "password": PASSWORD, "role": "provider",
                                           "display_name": "Ada 2"})
    assert dup.status_code == 409
    assert dup.headers["content-type"].startswith("application/problem+json")
    assert dup.json()["type"] == "/problems/conflict"
    assert dup.json()["errors"][0]["field"] == "email"
    # the password is stored hashed with argon2, never as given
    assert "password" not in r.json()


def test_signup_field_errors(api: Api) -> None:
    c = api.client
    cases = [
        ({"email": "not-an-email", "password": PASSWORD, "role": "customer", "display_name": "X"}, "email"),
        ({"email": "a@example.com", "password": "short", "role": "customer", "display_name": "X"}, "password"),
        ({"email": "a@example.com", "password": "aaaaaaaaaaaa", "role": "customer", "display_name": "X"}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "staff", "display_name": "X"}, "role"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "customer", "display_name": "   "}, "display_name"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "customer", "display_name": "X",
          "referral_code": "NOPE1234"}, "referral_code"),
        ({"email": "a@example.com", "password": PASSWORD, "role": "customer"}, "display_name"),
    ]
    for body, field in cases:
        r = c.post("/api/v1/accounts", json=body)
        assert r.status_code in (400, 422), (body, r.text)
        problem = r.json()
        assert problem["status"] == r.status_code
        assert any(field in e["field"] for e in problem.get("errors", [])) or field in problem["detail"], problem


def test_staff_cannot_be_created_through_the_api_and_partner_codes_only_for_customers(api: Api) -> None:
    partner, _ = api.user("partner")
    r = api.client.post("/api/v1/accounts", json={"email": "p@example.com", "password": PASSWORD,
                                                  "role": "provider", "display_name": "P",
                                                  "referral_code": partner["referral_code"]})
    assert r.status_code == 422


def test_login_logout_and_token_revocation(api: Api) -> None:
    c = api.client
    account = api.signup("customer")
    headers = api.login(account["email"].upper())
    me = c.get("/api/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["id"] == account["id"]
    assert c.delete("/api/v1/sessions/current", headers=headers).status_code == 204
    after = c.get("/api/v1/me", headers=headers)
    assert after.status_code == 401
    assert after.json()["type"] == "/problems/unauthenticated"


def test_wrong_password_and_unknown_email_look_the_same(api: Api) -> None:
    c = api.client
    account = api.signup("customer")
    wrong = c.post("/api/v1/sessions", json={"email": account["email"], "password": "wrong password!"})
    unknown = c.post("/api/v1/sessions", json={"email": "nobody@example.com", "password": "wrong password!"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_failed_logins_are_rate_limited_per_email_then_released(api: Api) -> None:
    c = api.client
    account = api.signup("customer")
    for _ in range(5):
        assert c.post("/api/v1/sessions", json={"email": account["email"], "password": "nope nope nope"}).status_code == 401
    blocked = c.post("/api/v1/sessions", json={"email": account["email"], "password": PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    # another account is not affected
    other = api.signup("customer")
    api.login(other["email"])
    with time_machine.travel(now() + timedelta(minutes=16), tick=False):
        assert c.post("/api/v1/sessions", json={"email": account["email"], "password": PASSWORD}).status_code == 201


def test_tokens_expire(api: Api) -> None:
    account = api.signup("customer")
    headers = api.login(account["email"])
    with time_machine.travel(now() + timedelta(days=31), tick=False):
        assert api.client.get("/api/v1/me", headers=headers).status_code == 401


def test_requests_without_or_with_garbage_tokens_are_rejected(api: Api) -> None:
    c = api.client
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        r = c.get("/api/v1/tasks", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")


def test_a_sign_up_hashes_the_password_before_it_takes_the_write_lock(db, monkeypatch) -> None:
    """Hashing a password (argon2, ~0.1 s) inside a sign-up's write transaction held every other writer back
    on SQLite, where a write transaction locks the whole database: another write commits while it hashes."""
    import threading
    import uuid

    from sqlalchemy import update

    from marketplace.db.models import Account, Role
    from marketplace.domain.accounts import services

    with db.session() as session:
        other = services.create_account(session, f"other-{uuid.uuid4().hex[:6]}@example.com", PASSWORD,
                                        Role.CUSTOMER, "Someone else")
    hashing, written = threading.Event(), threading.Event()
    order: list[str] = []
    real = services.hash_password

    def slow_hash(password: str) -> str:
        hashing.set()
        written.wait(10)  # (without the fix: until this times out, the write below waiting for the lock)
        order.append("hashed")
        return real(password)

    def sign_up() -> None:
        with db.session() as session:
            services.create_account(session, f"new-{uuid.uuid4().hex[:6]}@example.com", PASSWORD, Role.CUSTOMER,
                                    "New customer")

    monkeypatch.setattr(services, "hash_password", slow_hash)
    signing_up = threading.Thread(target=sign_up)
    signing_up.start()
    assert hashing.wait(10)
    with db.session() as session:
        session.execute(update(Account).where(Account.id == other.id).values(display_name="Someone renamed"))
    order.append("written")
    written.set()
    signing_up.join(30)
    assert order == ["written", "hashed"]
