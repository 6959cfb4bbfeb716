"""The portal over HTTP (no browser): CSRF on every form, session cookie flags, role and tenant rules on every
page, accessible form errors, pagination, and what a partner may not see. tests/browser drives the journeys."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from litestar.testing import TestClient

from marketplace.portal.charts import stacked_weekly_bars
from tests.conftest import BOOKKEEPING_TASK, PASSWORD, Api, bookkeepers

BASE = "https://testserver.local"  # the session and CSRF cookies are Secure


class Portal:
    """A browser-like client: keeps cookies, reads the CSRF token from the last page, submits forms."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self.api = Api(client)
        self.token = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        r = self.client.get(path, **kwargs)
        if m := re.search(r'name="_csrf_token" value="([^"]+)"', r.text):
            self.token = m.group(1)
        return r

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any) -> Any:
        if csrf and not self.token:
            self.get("/signin")
        body = {**({"_csrf_token": self.token} if csrf else {}), **(data or {})}
        return self.client.post(path, data=body, follow_redirects=False, **kwargs)

    def sign_in(self, email: str, password: str = PASSWORD) -> Any:
        self.get("/signin")
        r = self.post("/signin", {"email": email, "password": password})
        assert r.status_code == 303, r.text
        return r

    def staff(self, db: Any) -> None:
        """Sign in as a new staff member (staff accounts are made from the CLI, never by signing up)."""
        from marketplace.db.models import Role
        from marketplace.domain.accounts.services import create_account

        email = f"staff-{uuid.uuid4().hex[:6]}@relay.example"
        with db.session() as session:
            create_account(session, email, PASSWORD, Role.STAFF, "Staff member")
        self.sign_in(email)

    def new_user(self, role: str, **kwargs: Any) -> tuple[dict[str, Any], dict[str, str]]:
        account, headers = self.api.user(role, **kwargs)
        self.sign_in(account["email"])
        return account, headers


def _portal(settings: Any) -> Iterator[Portal]:
    from marketplace.asgi import build

    with TestClient(build(settings), base_url=BASE) as client:
        portal = Portal(client)
        yield portal
        # Jobs still queued on the process-wide stub broker would be taken by this app's worker as it stops,
        # and never finished: the next test's drain would wait for them forever.
        portal.api.drain()


@pytest.fixture
def portal(settings: Any) -> Iterator[Portal]:
    yield from _portal(settings)


@pytest.fixture
def other(settings: Any) -> Iterator[Portal]:
    """A second browser (its own cookies) on the same database."""
    yield from _portal(settings)


def set_cookies(response: Any) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def test_every_form_needs_the_token_from_this_browsers_cookie(portal: Portal, other: Portal) -> None:
    account, _ = portal.api.user("customer")
    r = portal.post("/signin", {"email": account["email"], "password": PASSWORD}, csrf=False)
    assert r.status_code == 403 and "This form has expired" in r.text
    other.get("/signin")  # a valid token, but bound to another browser's cookie
    portal.get("/signin")
    r = portal.client.post("/signin", data={"_csrf_token": other.token, "email": account["email"],
                                            "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    assert portal.post("/signin", {"email": account["email"], "password": PASSWORD}).status_code == 303
    # HTMX requests carry it as a header instead
    assert portal.client.post("/tasks/suggest", data={"title": "x"}, headers={"hx-request": "true"}).status_code == 403


def test_the_session_cookie_is_httponly_secure_and_lax_and_never_in_a_page(portal: Portal) -> None:
    csrf_cookie = set_cookies(portal.client.get("/signin"))["relay_csrf"]
    assert "HttpOnly" in csrf_cookie and "Secure" in csrf_cookie
    account, _ = portal.api.user("customer")
    r = portal.sign_in(account["email"])
    cookie = set_cookies(r)["relay_session"]
    for flag in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert flag in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    page = portal.get("/tasks")
    assert page.status_code == 200 and token not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # the cookie works only for pages: the API reads bearer tokens, so another site's form cannot use it
    assert portal.client.get("/api/v1/me").status_code == 401


def test_signing_out_ends_the_session_for_good(portal: Portal) -> None:
    account, _ = portal.api.user("customer")
    cookie = set_cookies(portal.sign_in(account["email"]))["relay_session"].split(";")[0].split("=", 1)[1]
    portal.get("/tasks")
    r = portal.post("/signout")
    assert r.status_code == 303 and "Max-Age=0" in set_cookies(r)["relay_session"]
    portal.client.cookies.set("relay_session", cookie, domain="testserver.local")  # replayed, as if stolen
    stolen = portal.client.get("/tasks", follow_redirects=False)
    assert f"relay_session={cookie}" in stolen.request.headers["cookie"]  # the old cookie was sent
    assert stolen.status_code == 303 and stolen.headers["location"].startswith("/signin")


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(portal: Portal) -> None:
    account, _ = portal.api.user("customer")
    r = portal.client.get("/tasks/new", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/tasks/new"
    portal.get("/signin?next=/tasks/new")
    assert portal.post("/signin", {"email": account["email"], "password": PASSWORD,
                                   "next": "/tasks/new"}).headers["location"] == "/tasks/new"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = portal.post("/signin", {"email": account["email"], "password": PASSWORD, "next": evil})
        assert r.headers["location"] == "/tasks", evil


def test_wrong_password_is_a_clear_error_and_too_many_are_refused(portal: Portal, settings: Any) -> None:
    account, _ = portal.api.user("customer")
    portal.get("/signin")
    r = portal.post("/signin", {"email": account["email"], "password": "not the password"})
    assert r.status_code == 401 and "Email or password is wrong" in r.text
    assert f'value="{account["email"]}"' in r.text and "not the password" not in r.text
    for _ in range(settings.login_max_failures):
        r = portal.post("/signin", {"email": account["email"], "password": "not the password"})
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text


@pytest.mark.parametrize("role, allowed, forbidden", [
    ("customer", ["/tasks", "/tasks/new", "/privacy"], ["/offers", "/work", "/profile", "/referrals", "/review"]),
    ("provider", ["/offers", "/work", "/profile", "/privacy"], ["/tasks", "/tasks/new", "/referrals", "/review"]),
    ("partner", ["/referrals", "/privacy"], ["/tasks", "/offers", "/review"]),
])
def test_each_page_is_for_its_role(portal: Portal, role: str, allowed: list[str], forbidden: list[str]) -> None:
    for path in allowed + forbidden:  # signed out: every one of them asks to sign in first
        r = portal.client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/signin?next={path}", path
    portal.new_user(role)
    for path in allowed:
        assert portal.get(path).status_code == 200, path
    for path in forbidden:
        r = portal.get(path)
        assert r.status_code == 403 and "This page is for" in r.text, path


def test_another_customers_task_is_not_found_and_cannot_be_cancelled(portal: Portal, other: Portal) -> None:
    _, headers = portal.new_user("customer")
    task_id = portal.api.post_task(headers, "Logo for a bakery", "A modern logo for our family bakery, please.")
    portal.api.drain()
    stranger, _ = other.new_user("customer")
    r = other.get(f"/tasks/{task_id}")
    assert r.status_code == 404 and "Page not found" not in r.text
    # the error page keeps the signed-in header (name, menu, sign-out), as every other page does
    assert stranger["display_name"] in r.text and "Sign out" in r.text
    r = other.get("/no-such-page")
    assert r.status_code == 404 and "Page not found" in r.text and stranger["display_name"] in r.text
    for action, data in (("cancel", {"reason": "mine now"}), ("complete", {}), ("request-changes", {"reason": "x"}),
                         ("rate", {"stars": "1"})):
        assert other.post(f"/tasks/{task_id}/{action}", data).status_code == 404, action
    assert portal.api.client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()["status"] != "cancelled"
    r = portal.post(f"/tasks/{task_id}/cancel", {"reason": "changed my mind"})
    assert r.status_code == 303
    page = portal.get(r.headers["location"])
    assert "Cancelled" in page.text and "changed my mind" in page.text


def test_a_provider_cannot_answer_another_providers_offer(portal: Portal, other: Portal) -> None:
    providers = bookkeepers(portal.api, 2)
    _, customer = portal.api.user("customer")
    portal.api.post_task(customer, *BOOKKEEPING_TASK)
    portal.api.drain()
    offers = {}
    for account, headers in providers:
        items = portal.api.client.get("/api/v1/offers", headers=headers).json()["items"]
        offers[account["email"]] = items[0]["id"]
    (mine, _), (theirs, _) = providers
    other.sign_in(mine["email"])
    assert other.post(f"/offers/{offers[theirs['email']]}/accept", {"proposal": "hi"}).status_code == 404
    assert other.post(f"/offers/{offers[theirs['email']]}/decline", {"reason": "x"}).status_code == 404
    r = other.post(f"/offers/{offers[mine['email']]}/accept", {"proposal": "Happy to help.", "from_draft": "0"})
    assert r.status_code == 303 and r.headers["location"].startswith("/work")
    task_id = portal.api.client.get(f"/api/v1/offers/{offers[mine['email']]}", headers=providers[0][1]).json()["task_id"]
    portal.sign_in(theirs["email"])  # the other provider cannot move the task along
    for action in ("start", "deliver"):
        assert portal.post(f"/work/{task_id}/{action}", {"note": "done"}).status_code == 404, action
    assert other.post(f"/work/{task_id}/start").status_code == 303


def test_form_errors_sit_next_to_their_field_and_in_a_summary_and_input_is_kept(portal: Portal) -> None:
    portal.new_user("customer")
    portal.get("/tasks/new")
    r = portal.post("/tasks/new", {"title": "Hi", "description": "A long enough description.", "budget": "lots"})
    assert r.status_code == 422
    html = r.text
    assert 'role="alert"' in html and 'href="#title"' in html and 'href="#budget"' in html
    assert re.search(r'id="title"[^>]*aria-describedby="title-hint title-error"[^>]*aria-invalid="true"', html)
    assert 'id="title-error"' in html and "at least 3 characters" in html
    assert "A long enough description." in html and 'value="lots"' in html
    for name in ("title", "description", "budget", "currency", "deadline"):
        assert f'<label for="{name}"' in html, name


def test_my_tasks_paginate(portal: Portal) -> None:
    _, headers = portal.new_user("customer")
    for i in range(23):
        portal.api.post_task(headers, f"Task number {i:02d}", "Something that needs doing, described.")
    portal.api.drain()
    first = portal.get("/tasks").text
    assert first.count('class="list-item"') == 20 and "Page 1 of 2" in first and 'rel="next"' in first
    second = portal.get("/tasks?page=2").text
    assert second.count('class="list-item"') == 3 and 'rel="prev"' in second


def test_a_customer_who_objects_gets_no_ai_suggestions(portal: Portal, monkeypatch: pytest.MonkeyPatch) -> None:
    portal.new_user("customer")
    portal.get("/privacy")
    assert portal.post("/privacy", {"ai_processing_objection": "on"}).status_code == 303
    assert "AI processing is switched off" in portal.get("/privacy").text

    def no_ai(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the router must not read an objecting customer's text")

    monkeypatch.setattr("marketplace.portal.customers.suggest_categories", no_ai)
    r = portal.client.post("/tasks/suggest", data={"title": "Leaking tap", "description": "It drips all night."},
                           headers={"hx-request": "true", "x-csrftoken": portal.token})
    assert r.status_code == 200 and "staff will choose the category" in r.text


@pytest.mark.model
def test_suggestions_come_from_the_live_router_and_are_not_stored(portal: Portal, db: Any) -> None:
    from sqlalchemy import func, select

    from marketplace.db.models import Task

    portal.new_user("customer")
    portal.get("/tasks/new")
    r = portal.client.post("/tasks/suggest", headers={"hx-request": "true", "x-csrftoken": portal.token},
                           data={"title": "Leaking kitchen tap", "description": "The mixer tap drips all night; "
                                                                                "please replace the cartridge."})
    assert r.status_code == 200 and "Plumbing" in r.text and "<html" not in r.text
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def test_the_category_preview_holds_no_write_lock_while_the_model_runs(
        portal: Portal, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preview runs after each pause in typing, and fitting or running the model takes time: on SQLite a
    write transaction around it would hold every other writer (sign-ups, accepts, routing) out meanwhile."""
    import sqlite3

    from sqlalchemy.engine import make_url

    if not settings.database_url.startswith("sqlite"):
        pytest.skip("about SQLite's database-wide write lock")
    lock_free: list[bool] = []

    def probe(*_args: Any, **_kwargs: Any) -> None:
        other = sqlite3.connect(make_url(settings.database_url).database, timeout=2)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            lock_free.append(True)
        except sqlite3.OperationalError:  # database is locked
            lock_free.append(False)
        finally:
            other.close()

    monkeypatch.setattr("marketplace.portal.customers.suggest_categories", probe)
    portal.new_user("customer")
    portal.get("/tasks/new")
    r = portal.client.post("/tasks/suggest", headers={"hx-request": "true", "x-csrftoken": portal.token},
                           data={"title": "Leaking kitchen tap", "description": "The mixer tap drips all night."})
    assert r.status_code == 200 and lock_free == [True]


def test_with_no_categories_yet_the_new_task_form_suggests_nothing_instead_of_failing(portal: Portal, db: Any) -> None:
    from sqlalchemy import select, update

    from marketplace.db.models import Category

    portal.new_user("customer")
    portal.get("/tasks/new")
    with db.session() as session:  # a fresh install before the taxonomy is loaded
        active = session.scalars(select(Category.id).where(Category.active.is_(True))).all()
        session.execute(update(Category).values(active=False))
    try:
        r = portal.client.post("/tasks/suggest", headers={"hx-request": "true", "x-csrftoken": portal.token},
                               data={"title": "Leaking kitchen tap", "description": "The mixer tap drips all night."})
    finally:
        with db.session() as session:
            session.execute(update(Category).where(Category.id.in_(active)).values(active=True))
    assert r.status_code == 200 and "Looks like" not in r.text and "not sure" not in r.text


def test_a_partner_chooses_the_categories_they_assist_with(portal: Portal, other: Portal) -> None:
    _, headers = portal.new_user("partner")
    page = portal.get("/referrals").text
    assert 'name="expertise" id="exp-web-development" value="web-development">' in page  # none chosen yet
    r = portal.post("/referrals/expertise", {"expertise": ["web-development", "ux-ui-design"]})
    assert r.status_code == 303
    assert portal.api.client.get("/api/v1/partners/me", headers=headers).json()["expertise"] == [
        "web-development", "ux-ui-design"]
    assert 'id="exp-ux-ui-design" value="ux-ui-design" checked>' in portal.get("/referrals").text
    r = portal.post("/referrals/expertise", {"expertise": ["web-development", "no-such-category"]})
    assert r.status_code == 422 and "Unknown categories: no-such-category" in r.text
    assert portal.post("/referrals/expertise", {}).status_code == 303  # none: no longer suggested
    assert portal.api.client.get("/api/v1/partners/me", headers=headers).json()["expertise"] == []
    other.new_user("customer")
    other.get("/tasks")
    assert other.post("/referrals/expertise", {"expertise": ["web-development"]}).status_code == 403


def test_a_partner_sees_counts_and_pseudonyms_never_task_text_or_contacts(portal: Portal, other: Portal) -> None:
    partner, _ = portal.new_user("partner")
    code = portal.api.client.get("/api/v1/me", headers=portal.api.login(partner["email"])).json()["referral_code"]
    referred, headers = other.api.user("customer", referral_code=code, display_name="Quentin Quill")
    other.api.user("customer", referral_code=code)
    portal.api.provider(["copywriting-content-writing"], "Copywriter for product launches")
    task_id = other.api.post_task(headers, "Secret launch plan copy",
                                  "Write the website copy and product descriptions for our unannounced launch.")
    other.api.drain()
    assert other.api.client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()["status"] == "routed"
    page = portal.get("/referrals").text
    assert f"signup?ref={code}" in page
    funnel = dict(re.findall(r'stage-(\w+)">.*?<strong>(\d+)</strong>', page, re.DOTALL))
    assert funnel == {"referred": "2", "posted": "1", "routed": "1", "completed": "0"}
    assert '<svg class="chart"' in page and "<table>" in page
    for private in ("Secret launch plan", "unannounced", referred["email"], "Quentin"):
        assert private not in page


def test_staff_place_a_task_in_one_click_and_others_cannot(portal: Portal, other: Portal, db: Any) -> None:
    portal.api.provider(["plumbing"], "Plumber for homes and small shops")
    _, customer = other.new_user("customer")
    task_id = other.api.post_task(customer, "zxq vlorp", "trandle quibb mernox fasht plovi wuzzle krett")
    other.api.drain()
    assert other.api.client.get(f"/api/v1/tasks/{task_id}", headers=customer).json()["status"] == "needs_review"
    assert other.post(f"/review/{task_id}/route", {"category": "plumbing"}).status_code == 403
    assert other.post(f"/tasks/{task_id}/transition", {"to": "cancelled", "reason": "mine"}).status_code == 403

    portal.staff(db)
    queue = portal.get("/review").text
    assert "zxq vlorp" in queue and "Route to" in queue
    r = portal.post(f"/review/{task_id}/route", {"category": "plumbing"})
    assert r.status_code == 303 and r.headers["location"] == "/review"
    portal.api.drain()
    assert f'id="review-{task_id}"' not in portal.get("/review").text
    task = other.api.client.get(f"/api/v1/tasks/{task_id}", headers=customer).json()
    assert task["status"] == "routed" and task["routing"]["categories"][0]["slug"] == "plumbing"

    r = portal.post(f"/tasks/{task_id}/transition", {"to": "cancelled", "reason": ""})
    assert r.status_code == 422
    r = portal.post(f"/tasks/{task_id}/transition", {"to": "cancelled", "reason": "duplicate of another task"})
    assert r.status_code == 303
    assert "staff override: duplicate of another task" in portal.get(f"/tasks/{task_id}").text


def test_the_profile_editor_validates_and_saves_what_matching_reads(portal: Portal) -> None:
    _, headers = portal.new_user("provider")
    portal.get("/profile")
    r = portal.post("/profile", {"headline": "", "capacity": "50", "languages": "english", "rate_currency": "euro"})
    assert r.status_code == 422
    for field in ("headline", "capacity", "languages", "rate_currency"):
        assert f'href="#{field}"' in r.text
    r = portal.post("/profile", {"headline": "Plumber for homes", "description": "Taps, pipes, boilers.",
                                 "skills": "taps, pipes", "categories": ["plumbing", "electrical-work"],
                                 "languages": "en, DE", "hourly_rate": "45", "rate_currency": "GBP",
                                 "capacity": "4", "accepting_work": "on"})
    assert r.status_code == 303
    profile = portal.api.client.get("/api/v1/providers/me", headers=headers).json()
    assert profile["categories"] == ["plumbing", "electrical-work"] and profile["languages"] == ["en", "de"]
    assert profile["capacity"] == 4 and profile["accepting_work"] is True and profile["skills"] == ["taps", "pipes"]
    assert profile["hourly_rate"] == "45.00" and profile["rate_currency"] == "GBP"
    assert '<option value="GBP" selected>' in portal.get("/profile").text
    # a rate needs its currency: nothing is assumed
    r = portal.post("/profile", {"headline": "Plumber for homes", "hourly_rate": "45", "rate_currency": "",
                                 "capacity": "4", "languages": "en"})
    assert r.status_code == 422 and 'href="#rate_currency"' in r.text


def test_a_proposal_records_whether_it_came_from_the_draft_and_was_edited(portal: Portal) -> None:
    providers = bookkeepers(portal.api, 1)
    _, customer = portal.api.user("customer")
    task_id = portal.api.post_task(customer, *BOOKKEEPING_TASK)
    portal.api.drain()
    (account, headers), = providers
    offer = portal.api.client.get("/api/v1/offers", headers=headers).json()["items"][0]
    draft = portal.api.client.get(f"/api/v1/offers/{offer['id']}/draft", headers=headers).json()["text"]
    portal.sign_in(account["email"])
    page = portal.get("/offers").text
    assert draft.split("\n")[0] in page, "the inbox shows the draft as the proposal"
    assert "Where each part of the draft came from" in page and "playbook" in page
    # and why this provider got the offer: the score and its components, as the API gives them
    assert f"match score {offer['score'] * 100:.0f} of 100" in page
    assert f"<dt>Your categories</dt><dd>{offer['components']['category'] * 100:.0f}%</dd>" in page
    assert f"<dt>How well your profile fits the request</dt><dd>{offer['components']['semantic'] * 100:.0f}%" in page
    assert portal.post(f"/offers/{offer['id']}/accept", {"proposal": draft, "from_draft": "1"}).status_code == 303
    seen = portal.api.client.get(f"/api/v1/tasks/{task_id}", headers=customer).json()
    assert seen["proposal"] == {"text": draft.strip(), "from_draft": True, "edited": False}


def test_the_weekly_chart_stacks_each_status_in_proportion() -> None:
    weeks = [(date(2026, 11, 2), {"waiting": 1, "completed": 3}), (date(2026, 11, 9), {"waiting": 0}),
             (date(2026, 11, 16), {"completed": 2, "cancelled": 2})]
    svg = str(stacked_weekly_bars(weeks, [("waiting", "Waiting <b>"), ("completed", "Done"),
                                          ("cancelled", "Cancelled")], "T & t", "D"))
    heights = {cls: [float(h) for h in re.findall(rf'class="series-{cls}"[^>]*height="([\d.]+)"', svg)]
               for cls in ("waiting", "completed", "cancelled")}
    assert heights["completed"][0] == pytest.approx(3 * heights["waiting"][0])
    assert heights["completed"][1] == pytest.approx(heights["cancelled"][0])
    assert "Waiting <b>" not in svg and "T &amp; t" in svg and 'role="img"' in svg


def test_every_portal_page_and_form_asks_a_stranger_to_sign_in(portal: Portal) -> None:
    public = {("GET", "/"), ("GET", "/signup"), ("POST", "/signup"), ("GET", "/signin"), ("POST", "/signin"),
              ("POST", "/signout")}
    portal.get("/signin")  # a valid CSRF token, so forms fail on who is asking, not on the token
    some_id = str(uuid.uuid4())
    checked = 0
    for route in portal.client.app.routes:
        if route.path.startswith(("/api/", "/schema", "/health", "/static")):
            continue
        path = re.sub(r"\{\w+:uuid\}", some_id, route.path)
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            if (method, route.path) in public:
                continue
            r = portal.get(path, follow_redirects=False) if method == "GET" else portal.post(path, {})
            assert r.status_code == 303 and r.headers["location"].startswith("/signin?next="), (method, path)
            checked += 1
    assert checked >= 20


def test_a_customer_who_objects_chooses_the_category_and_staff_place_the_task(portal: Portal, other: Portal,
                                                                             db: Any) -> None:
    from sqlalchemy import func, select

    from marketplace.db.models import CategoryExample, Draft

    portal.api.provider(["plumbing"], "Plumber for homes and small shops")
    _, headers = portal.new_user("customer")
    portal.get("/privacy")
    portal.post("/privacy", {"ai_processing_objection": "on"})
    page = portal.get("/tasks/new").text
    assert '<label for="category">Category</label>' in page and 'id="suggestions"' not in page
    r = portal.post("/tasks/new", {"title": "Dripping tap", "description": "The bathroom tap drips all night."})
    assert r.status_code == 422 and 'href="#category"' in r.text
    r = portal.post("/tasks/new", {"title": "Dripping tap", "description": "The bathroom tap drips all night.",
                                   "category": "plumbing"})
    task_id = r.headers["location"].rsplit("/", 1)[1]
    portal.api.drain()
    task = portal.api.client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()
    assert task["status"] == "needs_review" and task["routing"]["evidence"]["source"] == "objection"

    other.staff(db)
    assert "Route to Plumbing (customer's choice)" in other.get("/review").text
    assert other.post(f"/review/{task_id}/route", {"category": "plumbing"}).status_code == 303
    other.api.drain()
    assert portal.api.client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()["status"] == "routed"
    with db.session() as session:  # no AI drafts, and the task did not become a training example
        assert session.scalar(select(func.count()).select_from(Draft)) == 0
        assert session.scalar(select(func.count()).select_from(CategoryExample)
                              .where(CategoryExample.source == "staff")) == 0


@pytest.mark.model
def test_when_routing_cannot_place_a_task_staff_send_the_drafted_question_and_the_customer_replies(
    portal: Portal, other: Portal, db: Any
) -> None:
    from sqlalchemy import select

    from marketplace.db.models import Draft, Message

    _, customer = other.new_user("customer")
    task_id = other.api.post_task(customer, "zxq vlorp", "trandle quibb mernox fasht plovi wuzzle krett")
    other.api.drain()
    with db.session(readonly=True) as session:
        draft = session.scalars(select(Draft).where(Draft.task_id == uuid.UUID(task_id))).one()
    assert draft.kind == "clarifying_question" and draft.offer_id is None
    assert "zxq vlorp" in draft.text and "Is it closest to" in draft.text

    portal.staff(db)
    queue = portal.get("/review").text
    assert "Question to the customer" in queue and "Is it closest to" in queue
    edited = draft.text.replace("Could you tell us", "Could you please tell us")
    r = portal.post(f"/tasks/{task_id}/messages", {"body": edited, "from_draft": "1", "next": "/review"})
    assert r.status_code == 303 and r.headers["location"] == "/review"

    assert other.post(f"/tasks/{task_id}/messages", {"body": "It is about my garden fence."}).status_code == 303
    page = other.get(f"/tasks/{task_id}").text
    assert "Could you please tell us" in page and "It is about my garden fence." in page
    assert "It is about my garden fence." in portal.get("/review").text
    with db.session(readonly=True) as session:
        sent = session.scalars(select(Message).where(Message.task_id == uuid.UUID(task_id))
                               .order_by(Message.created_at)).all()
    assert [(m.author_role, m.from_draft, m.edited) for m in sent] == [("staff", True, True),
                                                                     ("customer", False, None)]
    intruder = Portal(portal.client)  # a third customer, same app
    intruder.client.cookies.clear()
    intruder.new_user("customer")
    assert intruder.post(f"/tasks/{task_id}/messages", {"body": "hello"}).status_code == 404
