"""Customers rate the provider who completed their task; ratings feed the matcher's rating component."""

from __future__ import annotations

import pytest

from tests.conftest import BOOKKEEPING_TASK as TASK
from tests.conftest import Api, bookkeepers

pytestmark = pytest.mark.model


def completed_task(api: Api) -> tuple[str, dict, dict, dict]:
    """(task id, customer headers, the provider who did it, another customer's headers)"""
    c = api.client
    providers = bookkeepers(api, 1)
    _, customer_h = api.user("customer")
    _, other_h = api.user("customer")
    task_id = api.post_task(customer_h, *TASK)
    api.drain()
    account, provider_h = providers[0]
    offer = c.get("/api/v1/offers?status=open", headers=provider_h).json()["items"][0]
    for step in (f"/api/v1/offers/{offer['id']}/accept", f"/api/v1/tasks/{task_id}/start",
                 f"/api/v1/tasks/{task_id}/deliver"):
        assert c.post(step, headers=provider_h).status_code == 200, step
    return task_id, customer_h, {"headers": provider_h, "id": account["id"]}, other_h


def test_only_the_customer_rates_a_completed_task_and_only_once(api: Api) -> None:
    c = api.client
    task_id, customer_h, provider, other_h = completed_task(api)
    url = f"/api/v1/tasks/{task_id}/rating"
    r = c.post(url, json={"stars": 5}, headers=customer_h)
    assert r.status_code == 409 and "completed" in r.json()["detail"]  # delivered, not yet accepted
    assert c.post(f"/api/v1/tasks/{task_id}/complete", headers=customer_h).status_code == 200

    for body in ({"stars": 0}, {"stars": 6}, {"stars": "five"}, {}, {"stars": 4, "extra": 1}):
        assert c.post(url, json=body, headers=customer_h).status_code == 422, body
    assert c.post(url, json={"stars": 4}, headers=other_h).status_code == 404  # another tenant
    assert c.post(url, json={"stars": 1}, headers=provider["headers"]).status_code == 403  # wrong role
    assert c.post(url, json={"stars": 4}).status_code == 401

    r = c.post(url, json={"stars": 4, "comment": "  Quick and tidy books.  "}, headers=customer_h)
    assert r.status_code == 201, r.text
    assert r.json()["stars"] == 4 and r.json()["comment"] == "Quick and tidy books."
    assert r.json()["provider_id"] == provider["id"]
    assert c.post(url, json={"stars": 1}, headers=customer_h).status_code == 409  # no second rating
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["rating"] == 4


def test_ratings_reach_the_matcher_as_a_score_component(api: Api, db) -> None:
    import uuid

    from marketplace.domain.tasks.services import latest_decision
    from routing.matcher import rating_component

    c = api.client
    task_id, customer_h, provider, _ = completed_task(api)
    c.post(f"/api/v1/tasks/{task_id}/complete", headers=customer_h).raise_for_status()
    c.post(f"/api/v1/tasks/{task_id}/rating", json={"stars": 1}, headers=customer_h).raise_for_status()

    second = api.post_task(customer_h, *TASK)
    api.drain()
    with db.session() as session:
        candidates = latest_decision(session, uuid.UUID(second)).candidates
    rated = next(x for x in candidates if x["provider_id"] == provider["id"])
    assert rated["components"]["rating"] == rating_component(1, 1) < rating_component(0, 0)
