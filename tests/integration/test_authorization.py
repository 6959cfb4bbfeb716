"""Every endpoint has an authorization rule: other tenants get 404, wrong roles 403, strangers 401."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Api

pytestmark = pytest.mark.model

TASK = ("Translate a product catalogue",
        "Translate our 30-page product catalogue from English into German, keeping the layout.")


@pytest.fixture
def world(api: Api, db) -> dict:
    """Two customers, two translators with offers on customer A's task, a partner and staff."""
    c = api.client
    _, a_h = api.user("customer")
    _, b_h = api.user("customer")
    _, p1_h = api.provider(["translation"], "German translator", "English to German translation of catalogues.")
    _, p2_h = api.provider(["translation"], "Technical translator", "Translations of manuals and catalogues.")
    _, outsider_h = api.provider(["plumbing"], "Plumber", "Leaks, taps and boilers.")
    _, partner_h = api.user("partner")
    task_id = api.post_task(a_h, *TASK)
    api.drain()
    offer_id = c.get("/api/v1/offers", headers=p1_h).json()["items"][0]["id"]
    return {"a_h": a_h, "b_h": b_h, "p1_h": p1_h, "p2_h": p2_h, "outsider_h": outsider_h,
            "partner_h": partner_h, "task_id": task_id, "offer_id": offer_id, "staff_h": api.staff(db)}


def test_other_customers_and_unrelated_accounts_get_404_for_a_task(api: Api, world: dict) -> None:
    c, t = api.client, world["task_id"]
    assert c.get(f"/api/v1/tasks/{t}", headers=world["a_h"]).status_code == 200
    assert c.get(f"/api/v1/tasks/{t}", headers=world["p1_h"]).status_code == 200  # has an offer on it
    assert c.get(f"/api/v1/tasks/{t}", headers=world["staff_h"]).status_code == 200
    for who in ("b_h", "outsider_h", "partner_h"):
        r = c.get(f"/api/v1/tasks/{t}", headers=world[who])
        assert r.status_code == 404, who
        assert r.json()["type"] == "/problems/not-found"
    # the same answer as for a task that does not exist
    assert c.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=world["b_h"]).json() == \
        c.get(f"/api/v1/tasks/{t}", headers=world["b_h"]).json()
    assert c.post(f"/api/v1/tasks/{t}/cancel", headers=world["b_h"]).status_code == 404
    assert c.post(f"/api/v1/tasks/{t}/start", headers=world["outsider_h"]).status_code == 404
    assert c.post(f"/api/v1/tasks/{t}/complete", headers=world["b_h"]).status_code == 404
    assert c.get("/api/v1/tasks", headers=world["b_h"]).json()["items"] == []


def test_providers_cannot_touch_other_providers_offers_or_drafts(api: Api, world: dict) -> None:
    c, o = api.client, world["offer_id"]
    assert c.get(f"/api/v1/offers/{o}/draft", headers=world["p1_h"]).status_code == 200
    for who in ("p2_h", "outsider_h"):
        assert c.get(f"/api/v1/offers/{o}", headers=world[who]).status_code == 404
        assert c.get(f"/api/v1/offers/{o}/draft", headers=world[who]).status_code == 404
        assert c.post(f"/api/v1/offers/{o}/accept", headers=world[who]).status_code == 404
        assert c.post(f"/api/v1/offers/{o}/decline", json={"reason": "x"}, headers=world[who]).status_code == 404
    # the offer is still open for its provider
    assert c.get(f"/api/v1/offers/{o}", headers=world["p1_h"]).json()["status"] == "open"


def test_provider_view_of_a_task_hides_router_internals(api: Api, world: dict) -> None:
    task = api.client.get(f"/api/v1/tasks/{world['task_id']}", headers=world["p1_h"]).json()
    assert task["routing"]["explanation"] == "" and task["routing"]["evidence"] == {}
    assert task["offered_to"] == 0


def test_roles_are_enforced_with_403(api: Api, world: dict) -> None:
    c = api.client
    checks = [
        ("get", "/api/v1/offers", "a_h"),
        ("get", "/api/v1/providers/me", "a_h"),
        ("get", "/api/v1/partners/me/referrals", "a_h"),
        ("get", "/api/v1/partners/me/referrals", "p1_h"),
        ("get", "/api/v1/partners/me", "a_h"),
        ("put", "/api/v1/partners/me", "p1_h"),
        ("get", "/api/v1/staff/review-queue", "a_h"),
        ("get", "/api/v1/staff/review-queue", "p1_h"),
        ("get", "/api/v1/staff/review-queue", "partner_h"),
        ("post", f"/api/v1/staff/tasks/{world['task_id']}/transition", "a_h"),
        ("post", "/api/v1/tasks", "p1_h"),
        ("post", "/api/v1/tasks", "partner_h"),
    ]
    for method, path, who in checks:
        kwargs = {"json": {"to": "cancelled", "reason": "because"}} if "transition" in path else {}
        if (method, path) == ("put", "/api/v1/partners/me"):
            kwargs = {"json": {"expertise": ["translation"]}}
        if path == "/api/v1/tasks":
            kwargs = {"json": {"title": "A task", "description": "A long enough description."}}
        r = getattr(c, method)(path, headers=world[who], **kwargs)
        assert r.status_code == 403, (path, who, r.text)
        assert r.json()["type"] == "/problems/forbidden"


def test_every_private_route_requires_authentication(api: Api, world: dict) -> None:
    c = api.client
    public = {("POST", "/api/v1/accounts"), ("POST", "/api/v1/sessions"), ("GET", "/api/v1/categories"),
              ("GET", "/health")}
    checked = 0
    for route in c.app.routes:
        if not route.path.startswith("/api/"):
            continue
        path = route.path.replace("{task_id:uuid}", world["task_id"]).replace("{offer_id:uuid}", world["offer_id"])
        for method in route.methods - {"OPTIONS", "HEAD"}:
            if (method, route.path) in public:
                continue
            r = c.request(method, path, json={})
            assert r.status_code == 401, (method, route.path, r.status_code)
            checked += 1
    assert checked >= 15


def test_staff_override_is_recorded_with_reason(api: Api, world: dict) -> None:
    c = api.client
    r = c.post(f"/api/v1/staff/tasks/{world['task_id']}/transition", headers=world["staff_h"],
               json={"to": "cancelled", "reason": "duplicate of another task"})
    assert r.status_code == 200, r.text
    last = r.json()["transitions"][-1]
    assert last["to_status"] == "cancelled" and last["actor_role"] == "staff"
    assert "duplicate of another task" in last["reason"]
    bad = c.post(f"/api/v1/staff/tasks/{world['task_id']}/transition", headers=world["staff_h"],
                 json={"to": "teleported", "reason": "why not"})
    assert bad.status_code == 422


def test_messages_on_a_task_are_for_its_customer_and_staff_only(api: Api, world: dict) -> None:
    c, t = api.client, world["task_id"]
    body = {"body": "Is it still open?"}
    assert c.post(f"/api/v1/tasks/{t}/messages", json=body, headers=world["b_h"]).status_code == 404
    for who in ("p1_h", "partner_h"):
        assert c.post(f"/api/v1/tasks/{t}/messages", json=body, headers=world[who]).status_code == 403
    r = c.post(f"/api/v1/tasks/{t}/messages", json=body, headers=world["a_h"])
    assert r.status_code == 201 and r.json()["messages"][-1]["author_role"] == "customer"
    r = c.post(f"/api/v1/tasks/{t}/messages", json={"body": "Yes, it is."}, headers=world["staff_h"])
    assert [m["body"] for m in r.json()["messages"]] == ["Is it still open?", "Yes, it is."]
    provider_view = c.get(f"/api/v1/tasks/{t}", headers=world["p1_h"]).json()
    assert provider_view["messages"] == [], "providers do not see the customer's messages with staff"
