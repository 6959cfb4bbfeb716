"""Offers: first accept wins, declines and expiries re-offer, capacity is never exceeded."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from marketplace.clock import now
from marketplace.db.models import OfferStatus
from routing.matcher import WEIGHTS
from tests.conftest import BOOKKEEPING_TASK as TASK
from tests.conftest import Api, bookkeepers
from workers.scheduler import expire_offers

pytestmark = pytest.mark.model

def open_offers(api: Api, headers: dict) -> list[dict]:
    r = api.client.get("/api/v1/offers?status=open", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def post_and_route(api: Api) -> tuple[dict, str]:
    """A new customer posts TASK and the worker routes it: the customer's headers and the task's id."""
    _, customer_h = api.user("customer")
    task_id = api.post_task(customer_h, *TASK)
    api.drain()
    return customer_h, task_id


def test_decline_with_reason_offers_the_task_to_the_next_provider(api: Api, settings) -> None:
    c = api.client
    providers = bookkeepers(api, 4)
    _, task_id = post_and_route(api)
    offered = [(a, h) for a, h in providers if open_offers(api, h)]
    waiting = [(a, h) for a, h in providers if not open_offers(api, h)]
    assert len(offered) == settings.offers_per_task == 3 and len(waiting) == 1

    _, headers = offered[0]
    offer = open_offers(api, headers)[0]
    assert c.post(f"/api/v1/offers/{offer['id']}/decline", json={"reason": ""}, headers=headers).status_code == 422
    r = c.post(f"/api/v1/offers/{offer['id']}/decline", json={"reason": "fully booked this month"}, headers=headers)
    assert r.status_code == 200
    assert r.json()["status"] == "declined" and r.json()["decline_reason"] == "fully booked this month"
    api.drain()
    # the fourth bookkeeper now has the offer, with a draft
    new_offers = open_offers(api, waiting[0][1])
    assert [o["task_id"] for o in new_offers] == [task_id]
    assert c.get(f"/api/v1/offers/{new_offers[0]['id']}/draft", headers=waiting[0][1]).status_code == 200
    # declining twice is a conflict, not a second re-offer
    assert c.post(f"/api/v1/offers/{offer['id']}/decline", json={"reason": "again"}, headers=headers).status_code == 409


def test_when_everyone_declines_the_task_goes_to_review(api: Api) -> None:
    c = api.client
    providers = bookkeepers(api, 2)
    customer_h, task_id = post_and_route(api)
    for _, headers in providers:
        for offer in open_offers(api, headers):
            assert c.post(f"/api/v1/offers/{offer['id']}/decline", json={"reason": "not my field"},
                          headers=headers).status_code == 200
    api.drain()  # the worker ranks the providers again, finds nobody new and hands the task to staff
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "needs_review"
    assert "declined" in task["transitions"][-1]["reason"]


def test_offers_expire_and_the_task_is_re_offered(api: Api, settings, db) -> None:
    c = api.client
    providers = bookkeepers(api, 4)
    customer_h, task_id = post_and_route(api)
    first_round = {a["id"] for a, h in providers if open_offers(api, h)}
    assert len(first_round) == 3
    # nothing expires before the window ends
    assert expire_offers(settings, db) == 0
    with time_machine.travel(now() + timedelta(hours=settings.offer_window_hours, minutes=1), tick=False):
        assert expire_offers(settings, db) == 3
        statuses = {}
        for a, h in providers:
            items = c.get("/api/v1/offers", headers=h).json()["items"]
            statuses[a["id"]] = [o["status"] for o in items]
        assert all(statuses[pid] == ["expired"] for pid in first_round)
        fourth = next(pid for pid in statuses if pid not in first_round)
        assert statuses[fourth] == ["open"]
        expired_offer = next(o for a, h in providers if a["id"] in first_round
                             for o in c.get("/api/v1/offers", headers=h).json()["items"])
        h = next(h for a, h in providers if a["id"] == next(iter(first_round)))
        assert c.post(f"/api/v1/offers/{expired_offer['id']}/accept", headers=h).status_code in (404, 409)
        # running the scheduler again changes nothing
        assert expire_offers(settings, db) == 0
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"


def test_no_provider_gets_offers_beyond_capacity(api: Api) -> None:
    c = api.client
    (_, solo_h), = bookkeepers(api, 1, capacity=1)
    _, customer_h = api.user("customer")
    first = api.post_task(customer_h, *TASK)
    second = api.post_task(customer_h, "Monthly bookkeeping for a cafe",
                           "Reconcile the cafe's bank and card transactions every month in Xero.")
    api.drain()
    offers = open_offers(api, solo_h)
    assert len(offers) == 1
    statuses = {t: c.get(f"/api/v1/tasks/{t}", headers=customer_h).json()["status"] for t in (first, second)}
    assert sorted(statuses.values()) == ["needs_review", "routed"]


def test_providers_see_what_their_offer_score_is_made_of_and_staff_see_every_ranked_provider(api: Api, db) -> None:
    c = api.client
    providers = bookkeepers(api, 4)
    customer_h, task_id = post_and_route(api)
    mine = {}
    for account, headers in providers:
        for offer in open_offers(api, headers):
            assert set(offer["components"]) == set(WEIGHTS)  # not the fairness bookkeeping of the category
            assert abs(offer["score"] - sum(w * offer["components"][k] for k, w in WEIGHTS.items())) <= 5.1e-5
            mine[account["id"]] = offer
    assert len(mine) == 3

    ranked = c.get(f"/api/v1/tasks/{task_id}", headers=api.staff(db)).json()["routing"]["providers"]
    names = {a["id"]: a["display_name"] for a, _ in providers}
    assert {p["provider_id"] for p in ranked} == set(names)  # all four bookkeepers, best first
    assert [p["score"] for p in ranked] == sorted((p["score"] for p in ranked), reverse=True)
    for p in ranked:
        assert p["name"] == names[p["provider_id"]]
        if p["provider_id"] in mine:
            assert p["offer"] == "open"
            assert {k: p["components"][k] for k in WEIGHTS} == mine[p["provider_id"]]["components"]
        else:
            assert p["offer"] is None and set(WEIGHTS) <= set(p["components"])
    # nobody else sees the other providers or their scores
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["routing"]["providers"] is None
    headers = next(h for a, h in providers if a["id"] in mine)
    assert c.get(f"/api/v1/tasks/{task_id}", headers=headers).json()["routing"]["providers"] is None


def test_first_accept_wins(api: Api) -> None:
    c = api.client
    providers = bookkeepers(api, 3)
    customer_h, task_id = post_and_route(api)
    results = []
    for _, headers in providers:
        offer = c.get("/api/v1/offers", headers=headers).json()["items"][0]
        results.append(c.post(f"/api/v1/offers/{offer['id']}/accept", headers=headers).status_code)
    assert results == [200, 409, 409]
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "assigned"
    assert task["assigned_provider"]["id"] == providers[0][0]["id"]


def test_cancelling_withdraws_open_offers_and_is_recorded(api: Api) -> None:
    c = api.client
    providers = bookkeepers(api, 2)
    customer_h, task_id = post_and_route(api)
    r = c.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "found someone locally"}, headers=customer_h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["transitions"][-1]["reason"] == "found someone locally"
    for _, headers in providers:
        assert open_offers(api, headers) == []
    again = c.post(f"/api/v1/tasks/{task_id}/cancel", headers=customer_h)
    assert again.status_code == 409 and again.json()["type"] == "/problems/illegal-transition"


def test_illegal_transitions_are_rejected_with_a_clear_error(api: Api) -> None:
    c = api.client
    (_, provider_h), = bookkeepers(api, 1)
    customer_h, task_id = post_and_route(api)
    offer = open_offers(api, provider_h)[0]
    c.post(f"/api/v1/offers/{offer['id']}/accept", headers=provider_h)
    r = c.post(f"/api/v1/tasks/{task_id}/deliver", headers=provider_h)
    assert r.status_code == 409
    assert r.json()["detail"] == "A task that is assigned cannot become delivered."
    assert c.post(f"/api/v1/tasks/{task_id}/complete", headers=customer_h).status_code == 409


def test_equally_good_providers_share_the_offers(settings) -> None:
    from litestar.testing import TestClient

    from marketplace.asgi import build

    with TestClient(build(settings.with_(offers_per_task=1))) as client:
        api = Api(client)
        providers = bookkeepers(api, 2, capacity=5)
        _, customer_h = api.user("customer")
        for _ in range(4):
            task_id = api.post_task(customer_h, *TASK)
            api.drain()
            # the customer cancels, so nobody's load grows: only the record of recent offers remains
            assert client.post(f"/api/v1/tasks/{task_id}/cancel", headers=customer_h).status_code == 200
        counts = sorted(len(client.get("/api/v1/offers", headers=h).json()["items"]) for _, h in providers)
    # without fairness the better-ranked of two near-identical profiles would get all four
    assert counts == [2, 2]


@pytest.fixture
def one_offer_api(settings) -> Iterator[Api]:
    """The API with one offer per task, so who gets a re-offer is plain to see."""
    from litestar.testing import TestClient

    from marketplace.asgi import build

    with TestClient(build(settings.with_(offers_per_task=1))) as client:
        yield Api(client)


def decline_all(api: Api, headers: dict) -> None:
    for offer in open_offers(api, headers):
        r = api.client.post(f"/api/v1/offers/{offer['id']}/decline", json={"reason": "cannot"}, headers=headers)
        assert r.status_code == 200


def test_a_provider_who_was_full_when_the_task_was_routed_gets_it_once_they_have_room(one_offer_api: Api) -> None:
    api = one_offer_api
    (_, x_h), (_, y_h) = bookkeepers(api, 2, capacity=1)
    post_and_route(api)
    first_to, second_to = (x_h, y_h) if open_offers(api, x_h) else (y_h, x_h)
    customer_h, second = post_and_route(api)  # the first provider is full: only the other can take it
    assert [o["task_id"] for o in open_offers(api, second_to)] == [second]
    decline_all(api, first_to)  # room again
    decline_all(api, second_to)
    (reoffer,) = open_offers(api, first_to)
    assert reoffer["task_id"] == second
    # scored as they are now, with room, not as they were when the task was routed (full: availability 0)
    assert reoffer["components"]["availability"] == 1.0
    assert abs(reoffer["score"] - sum(w * reoffer["components"][k] for k, w in WEIGHTS.items())) <= 5.1e-5
    assert api.client.get(f"/api/v1/tasks/{second}", headers=customer_h).json()["status"] == "routed"


def test_a_provider_who_joins_after_routing_is_offered_the_task_once_its_candidates_have_declined(
    one_offer_api: Api, db
) -> None:
    api = one_offer_api
    providers = bookkeepers(api, 2)
    customer_h, task_id = post_and_route(api)
    (first_h,) = [h for _, h in providers if open_offers(api, h)]
    decline_all(api, first_h)  # the task goes to the other stored candidate
    (newcomer, newcomer_h), = bookkeepers(api, 1)  # joins after the task was routed
    decline_all(api, next(h for _, h in providers if h is not first_h))
    api.drain()
    assert [o["task_id"] for o in open_offers(api, newcomer_h)] == [task_id]
    assert api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"
    ranked = api.client.get(f"/api/v1/tasks/{task_id}", headers=api.staff(db)).json()["routing"]["providers"]
    assert [p["offer"] for p in ranked if p["provider_id"] == newcomer["id"]] == ["open"]
    assert sorted(p["offer"] for p in ranked) == ["declined", "declined", "open"]


def test_a_routed_task_left_without_offers_by_a_failed_re_offer_goes_to_staff(
    one_offer_api: Api, db, settings, monkeypatch
) -> None:
    from marketplace import jobs
    from marketplace.domain.routing.services import sweep_stalled

    api = one_offer_api
    (_, headers), = bookkeepers(api, 1)
    customer_h, task_id = post_and_route(api)
    monkeypatch.setattr(jobs, "_send", lambda *_: (_ for _ in ()).throw(ConnectionError("broker down")))
    decline_all(api, headers)  # its re-offer job cannot be sent
    assert api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"
    with db.session() as session:
        assert sweep_stalled(session, timedelta(minutes=30)) == 0
    with time_machine.travel(now() + timedelta(minutes=31), tick=False), db.session() as session:
        assert sweep_stalled(session, timedelta(minutes=30)) == 1
    task = api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "needs_review" and "declined" in task["transitions"][-1]["reason"]


def test_a_task_staff_force_to_routed_without_offers_goes_back_to_them_and_a_fresh_one_does_not(
    api: Api, db
) -> None:
    from marketplace.domain.routing.services import sweep_stalled

    c = api.client
    bookkeepers(api, 1)
    _, customer_h = api.user("customer")  # objects to AI: routing sends the task to staff, with no offer
    c.put("/api/v1/me/privacy", json={"ai_processing_objection": True}, headers=customer_h)
    task_id = api.post_task(customer_h, *TASK)
    api.drain()
    staff_h = api.staff(db)
    c.post(f"/api/v1/staff/tasks/{task_id}/transition", headers=staff_h,
           json={"to": "routed", "reason": "arranged by phone"}).raise_for_status()
    with db.session() as session:
        assert sweep_stalled(session, timedelta(minutes=30)) == 0  # just routed
    with time_machine.travel(now() + timedelta(minutes=31), tick=False), db.session() as session:
        assert sweep_stalled(session, timedelta(minutes=30)) == 1
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"


def test_a_re_offer_skips_a_provider_who_has_left_the_category_since(one_offer_api: Api) -> None:
    api = one_offer_api
    providers = bookkeepers(api, 2)
    customer_h, task_id = post_and_route(api)
    (offered_h,) = [h for _, h in providers if open_offers(api, h)]
    (other_h,) = [h for _, h in providers if h is not offered_h]
    profile = api.client.get("/api/v1/providers/me", headers=other_h).json()
    profile["categories"] = ["web-development"]
    body = {k: profile[k] for k in ("headline", "description", "skills", "categories", "languages", "capacity",
                                    "accepting_work", "hourly_rate", "rate_currency")}
    assert api.client.put("/api/v1/providers/me", json=body, headers=other_h).status_code == 200
    decline_all(api, offered_h)
    api.drain()
    assert open_offers(api, other_h) == []  # web development now: not offered a bookkeeping task
    assert api.client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"


def test_a_deactivated_provider_is_neither_offered_new_tasks_nor_re_offered_old_ones(
    one_offer_api: Api, db
) -> None:
    from sqlalchemy import select, update

    from marketplace.db.models import Account, Offer

    api = one_offer_api
    providers = bookkeepers(api, 3)
    _, task_id = post_and_route(api)
    (offered_h,) = [h for _, h in providers if open_offers(api, h)]
    waiting = [(a, h) for a, h in providers if h is not offered_h]
    with db.session() as session:  # an account closed by staff: it can no longer sign in to answer
        session.execute(update(Account).where(Account.id == uuid.UUID(waiting[0][0]["id"])).values(is_active=False))
    decline_all(api, offered_h)
    assert [o["task_id"] for o in open_offers(api, waiting[1][1])] == [task_id]
    # new tasks go to the active providers only
    for _ in range(3):
        customer_h, task = post_and_route(api)
        assert api.client.get(f"/api/v1/tasks/{task}", headers=customer_h).json()["status"] == "routed"
    with db.session() as session:
        closed = uuid.UUID(waiting[0][0]["id"])
        assert session.scalars(select(Offer).where(Offer.provider_id == closed)).all() == []


def test_providers_saying_wrong_category_send_the_task_to_staff_whose_placement_teaches_the_router(
    api: Api, db
) -> None:
    from marketplace.db.models import CategoryExample
    from marketplace.domain.categories.services import load_taxonomy

    c = api.client
    providers = bookkeepers(api, 4)
    customer_h, task_id = post_and_route(api)
    offered = [h for _, h in providers if open_offers(api, h)]
    first, second = (open_offers(api, h)[0] for h in offered[:2])

    bad = [
        ({"reason": "x", "code": "no_such_code"}, 422),
        ({"reason": "x", "code": "too_busy", "suggested_category": "tax-preparation"}, 422),
        ({"reason": "x", "code": "wrong_category", "suggested_category": "no-such-category"}, 422),
    ]
    for body, status in bad:
        r = c.post(f"/api/v1/offers/{first['id']}/decline", json=body, headers=offered[0])
        assert r.status_code == status, (body, r.text)
    assert open_offers(api, offered[0])  # a rejected request changed nothing

    # One provider's view re-offers the task as usual...
    r = c.post(f"/api/v1/offers/{first['id']}/decline", headers=offered[0], json={
        "reason": "this is a tax return, not bookkeeping", "code": "wrong_category",
        "suggested_category": "tax-preparation"})
    assert r.status_code == 200, r.text
    assert r.json()["decline_code"] == "wrong_category" and r.json()["suggested_category"] == "tax-preparation"
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"
    # ...a second one sends it to staff, with the other offers withdrawn
    c.post(f"/api/v1/offers/{second['id']}/decline", headers=offered[1],
           json={"reason": "needs a tax adviser", "code": "wrong_category"}).raise_for_status()
    api.drain()
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"
    assert not any(open_offers(api, h) for _, h in providers)
    staff_h = api.staff(db)
    queue = c.get("/api/v1/staff/review-queue", headers=staff_h).json()["items"]
    item = next(i for i in queue if i["id"] == task_id)
    assert "2 providers say this is not" in item["reason"] and "tax-preparation" in item["reason"]

    with db.session() as session:
        version = load_taxonomy(session).version
    c.post(f"/api/v1/staff/tasks/{task_id}/route", headers=staff_h,
           json={"category": "tax-preparation", "reason": "providers were right"}).raise_for_status()
    with db.session() as session:
        learned = session.query(CategoryExample).filter_by(task_id=uuid.UUID(task_id)).one()
        assert learned.source == "staff" and learned.category.slug == "tax-preparation"
        assert load_taxonomy(session).version != version  # the router refits on the new example


def wrong_category(api: Api, headers: dict, offer_id: str) -> None:
    api.client.post(f"/api/v1/offers/{offer_id}/decline", headers=headers,
                    json={"reason": "not my kind of work", "code": "wrong_category"}).raise_for_status()


def test_a_task_placed_again_is_ranked_among_providers_who_have_not_seen_it(api: Api, db) -> None:
    c = api.client
    providers = bookkeepers(api, 6)
    customer_h, task_id = post_and_route(api)
    first = [h for _, h in providers if open_offers(api, h)]
    for headers in first[:2]:  # the first vote re-offers the task to a fourth bookkeeper, the second sends it back
        wrong_category(api, headers, open_offers(api, headers)[0]["id"])
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"
    offered = {a["id"] for a, h in providers if c.get("/api/v1/offers", headers=h).json()["items"]}
    assert len(offered) == 4
    staff_h = api.staff(db)
    c.post(f"/api/v1/staff/tasks/{task_id}/route", headers=staff_h,
           json={"category": "bookkeeping-accounting", "reason": "it is bookkeeping"}).raise_for_status()
    api.drain()
    ranked = c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()["routing"]["providers"]
    fresh = {a["id"] for a, _ in providers} - offered
    assert {p["provider_id"] for p in ranked} == fresh and [p["offer"] for p in ranked] == ["open", "open"]


def test_wrong_category_votes_count_against_the_category_they_were_cast_on_and_a_new_placement_replaces_the_old(
    api: Api, db
) -> None:
    from marketplace.db.models import CategoryExample

    c = api.client
    providers = bookkeepers(api, 3) + [api.provider(["tax-preparation"], f"Tax adviser number {i}",
                                                    "I prepare personal and company tax returns.")
                                       for i in range(4)]
    customer_h, task_id = post_and_route(api)

    def offered() -> list[tuple[dict, dict]]:
        return [(o, h) for _, h in providers for o in open_offers(api, h) if o["task_id"] == task_id]

    def status() -> str:
        return c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"]

    for offer, headers in offered()[:2]:  # two bookkeepers: this is not bookkeeping
        wrong_category(api, headers, offer["id"])
    assert status() == "needs_review"
    staff_h = api.staff(db)
    c.post(f"/api/v1/staff/tasks/{task_id}/route", headers=staff_h,
           json={"category": "tax-preparation"}).raise_for_status()
    api.drain()
    assert status() == "routed"
    # One provider's view of the new category re-offers the task, as for any task: the two votes against
    # bookkeeping are settled by staff's placement, they are not votes against tax preparation.
    offer, headers = offered()[0]
    wrong_category(api, headers, offer["id"])
    api.drain()
    assert status() == "routed"
    offer, headers = offered()[0]
    wrong_category(api, headers, offer["id"])
    assert status() == "needs_review"
    reason = c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()["transitions"][-1]["reason"]
    assert reason.startswith("2 providers say this is not Tax")

    # Staff place it again: the router learns the latest placement only, not both.
    c.post(f"/api/v1/staff/tasks/{task_id}/route", headers=staff_h,
           json={"category": "bookkeeping-accounting"}).raise_for_status()
    with db.session() as session:
        learned = session.query(CategoryExample).filter_by(task_id=uuid.UUID(task_id)).all()
        assert [(e.category.slug, e.source) for e in learned] == [("bookkeeping-accounting", "staff")]


def test_wrong_category_votes_count_when_the_api_hosts_clock_runs_ahead_of_the_workers(
    api: Api, db, settings
) -> None:
    """Staff place a task on the API host; the worker, on another host, makes the offers a moment later. If
    the API's clock is ahead, the offers look older than the placement: votes on them must still count."""
    from marketplace import jobs
    from marketplace.auth import Principal
    from marketplace.db.models import Role
    from marketplace.domain.accounts.services import create_account
    from marketplace.domain.staff.services import override, route_by_hand

    c = api.client
    providers = [api.provider(["tax-preparation"], f"Tax adviser number {i}",
                              "I prepare personal and company tax returns.") for i in range(4)]
    customer_h, task_id = post_and_route(api)
    with db.session() as session:
        staff = create_account(session, f"staff-{uuid.uuid4().hex[:6]}@relay.example", "a staff password 1",
                               Role.STAFF, "Staff member")
        me = Principal(staff.id, Role.STAFF, uuid.uuid4())
    with time_machine.travel(now() + timedelta(seconds=30), tick=False), db.session() as session:
        if c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] != "needs_review":
            override(session, me, uuid.UUID(task_id), "needs_review", "check it")
        route_by_hand(session, me, uuid.UUID(task_id), "tax-preparation", "")
    with db.session() as session:  # the job reaches the worker, whose clock is right
        jobs.relay_pending(session, settings)
    api.drain()
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"
    for _ in range(2):
        offer, headers = next((o, h) for _, h in providers for o in open_offers(api, h) if o["task_id"] == task_id)
        wrong_category(api, headers, offer["id"])
        api.drain()
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"


def test_a_vote_on_a_re_offer_counts_when_the_workers_clock_runs_ahead_of_the_api_hosts(api: Api) -> None:
    """The worker dates the decision; a decline on the API host re-offers the task, dated by that host's clock.
    With the worker's clock ahead, the re-offer must not look older than the decision it comes from."""
    c = api.client
    providers = bookkeepers(api, 4)
    _, customer_h = api.user("customer")
    with time_machine.travel(now() + timedelta(seconds=30), tick=False):  # the worker's clock, ahead
        task_id = api.post_task(customer_h, *TASK)
        api.drain()
    offered = [(o, h) for _, h in providers for o in open_offers(api, h) if o["task_id"] == task_id]
    waiting = [h for _, h in providers if not open_offers(api, h)]
    wrong_category(api, offered[0][1], offered[0][0]["id"])  # one vote: the task is re-offered
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed"
    re_offer = open_offers(api, waiting[0])[0]
    wrong_category(api, waiting[0], re_offer["id"])  # the second vote, on the re-offer
    assert c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "needs_review"


def test_sending_a_task_back_to_routing_asks_the_model_again_instead_of_keeping_its_rejected_category(
    api: Api, db
) -> None:
    c = api.client
    providers = bookkeepers(api, 4)
    customer_h, task_id = post_and_route(api)
    for _, headers in providers:
        for offer in open_offers(api, headers)[:1]:
            if c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["status"] == "routed":
                wrong_category(api, headers, offer["id"])
    staff_h = api.staff(db)
    task = c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()
    assert task["status"] == "needs_review" and task["routing"]["evidence"]["source"] == "model"

    c.post(f"/api/v1/staff/tasks/{task_id}/transition", headers=staff_h,
           json={"to": "routing", "reason": "try the router again"}).raise_for_status()
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()
    # the model decided again: no staff member chose the category the providers rejected
    assert task["routing"]["evidence"]["source"] == "model", task["routing"]
    assert task["routing"]["evidence"]["taxonomy_version"] != "staff"

    # A category staff chose survives the same override (here no provider does tax returns, so the placement
    # ends in review, and staff try again).
    assert task["status"] == "needs_review"  # every bookkeeper has had the task
    c.post(f"/api/v1/staff/tasks/{task_id}/route", headers=staff_h,
           json={"category": "tax-preparation"}).raise_for_status()
    api.drain()
    c.post(f"/api/v1/staff/tasks/{task_id}/transition", headers=staff_h,
           json={"to": "routing", "reason": "offer it again"}).raise_for_status()
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()
    assert task["routing"]["evidence"]["source"] == "staff", task["routing"]
    assert task["routing"]["categories"][0]["slug"] == "tax-preparation"


def test_sending_a_routed_task_back_to_routing_withdraws_the_offers_made_in_the_models_category(api: Api, db) -> None:
    c = api.client
    providers = bookkeepers(api, 4)
    _, task_id = post_and_route(api)
    first = {o["id"] for _, h in providers for o in open_offers(api, h)}
    assert len(first) == 3
    staff_h = api.staff(db)
    c.post(f"/api/v1/staff/tasks/{task_id}/transition", headers=staff_h,
           json={"to": "routing", "reason": "route it again"}).raise_for_status()
    api.drain()
    still_open = {o["id"] for _, h in providers for o in open_offers(api, h)}
    assert not first & still_open  # the category may change: no offer from the earlier decision stays open
    assert c.get(f"/api/v1/tasks/{task_id}", headers=staff_h).json()["routing"]["evidence"]["source"] == "model"


def test_drafts_are_written_with_no_write_transaction_open(api: Api, settings, db,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The generative drafter takes seconds; on SQLite a write transaction would lock every other writer out
    (sign-ins, posted tasks) for that long. Offer proposals and clarifying questions alike."""
    import sqlite3

    from sqlalchemy.engine import make_url

    from models.drafter import Drafter

    if not settings.database_url.startswith("sqlite"):
        pytest.skip("about SQLite's database-wide write lock")
    path = make_url(settings.database_url).database
    lock_free: dict[str, list[bool]] = {"draft": [], "clarifying_question": []}

    def probing(name: str):
        real = getattr(Drafter, name)

        def probe_then_draft(self: Drafter, *args: object) -> object:
            # Another worker thread may be writing for a few milliseconds (the next draft, a routing batch):
            # wait for that. A transaction held by this very job would not end while it waits, so it fails.
            probe = sqlite3.connect(path, timeout=2)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.rollback()
                lock_free[name].append(True)
            except sqlite3.OperationalError:  # database is locked
                lock_free[name].append(False)
            finally:
                probe.close()
            return real(self, *args)
        return probe_then_draft

    for name in lock_free:
        monkeypatch.setattr(Drafter, name, probing(name))
    bookkeepers(api, 2)
    _, customer = api.user("customer")
    api.post_task(customer, *TASK)
    api.post_task(customer, "zxq vlorp", "trandle quibb mernox fasht plovi wuzzle krett")  # fits nowhere
    api.drain()
    assert lock_free == {"draft": [True, True], "clarifying_question": [True]}


def test_a_tasks_drafts_travel_together_and_one_failure_loses_or_repeats_no_other(
        api: Api, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The draft jobs of a task's offers go to the worker as one draft_for_offers message (jobs.GROUPED). If
    one draft fails, the others are still saved, and the retry writes only the missing one."""
    from marketplace import jobs
    from models.drafter import Drafter

    sent: list[tuple[str, tuple]] = []
    real_send = jobs._send
    monkeypatch.setattr(jobs, "_send", lambda broker, rows: (
        sent.extend((m.actor_name, m.args) for m in jobs._messages(rows)), real_send(broker, rows)))
    calls: list[str] = []
    real_draft = Drafter.draft

    def flaky(self: Drafter, task, provider):
        calls.append(provider.display_name)
        if len(calls) == 1:
            raise RuntimeError("the drafting model ran out of memory")
        return real_draft(self, task, provider)

    monkeypatch.setattr(Drafter, "draft", flaky)
    providers = bookkeepers(api, 3)
    _, customer_h = api.user("customer")
    api.post_task(customer_h, *TASK)
    api.drain()
    offers = [(o, h) for _, h in providers for o in open_offers(api, h)]
    assert len(offers) == settings.offers_per_task == 3
    (drafts,) = [args for actor, args in sent if actor.startswith("draft")]  # one message for the three
    assert sorted(drafts[0]) == sorted(o["id"] for o, _ in offers)
    for offer, headers in offers:
        assert api.client.get(f"/api/v1/offers/{offer['id']}/draft", headers=headers).status_code == 200
    assert len(calls) == 4 and calls.count(calls[0]) == 2  # the failed one again, the others once


def _routed_long_ago(db: Any, customer_id: str, tasks: dict[uuid.UUID, list[str]],
                     offers: list[tuple[uuid.UUID, str, float, OfferStatus]]) -> None:
    """Tasks routed two days ago to ``tasks[task]`` (candidate provider ids, best first), with ``offers``
    (task, provider, hours until it expires, status)."""
    from marketplace.db.models import Offer, RoutingDecision, RoutingOutcome, Task, TaskStatus

    long_ago = now() - timedelta(days=2)
    with db.session() as session:
        for task_id, candidates in tasks.items():
            session.add(Task(id=task_id, customer_id=uuid.UUID(customer_id), title=TASK[0], description=TASK[1],
                             status=TaskStatus.ROUTED, created_at=long_ago))
            session.flush()
            session.add(RoutingDecision(
                task_id=task_id, outcome=RoutingOutcome.ROUTED, created_at=long_ago,
                categories=[{"slug": "bookkeeping-accounting", "score": 0.9}], explanation={},
                candidates=[{"provider_id": c, "score": 0.5} for c in candidates], model_id="t", taxonomy_version="t"))
        for rank, (task_id, provider_id, hours, status) in enumerate(offers):
            session.add(Offer(task_id=task_id, provider_id=uuid.UUID(provider_id), status=status, rank=rank + 1,
                              score=0.5, created_at=long_ago, expires_at=now() + timedelta(hours=hours)))


def _expire_with(db: Any, settings: Any, before_task: uuid.UUID, meanwhile: Callable[[], object]) -> object:
    """Run the scheduler's expiry in a thread, paused just before it locks ``before_task`` until ``meanwhile``
    (run here) has finished or is waiting for a lock. Returns the offers expired, or what the expiry raised."""
    import threading
    import time

    from sqlalchemy import event, text

    def waiting_for_a_lock() -> int:
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                     " AND wait_event_type = 'Lock'")).scalar_one()

    paused, done = threading.Event(), threading.Event()

    def pause(conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.current_thread().name == "scheduler" and "FOR NO KEY UPDATE" in statement \
                and "FROM tasks" in statement and str(before_task) in str(parameters) and not paused.is_set():
            paused.set()
            deadline = time.monotonic() + 10
            while not done.is_set() and not waiting_for_a_lock() and time.monotonic() < deadline:
                time.sleep(0.05)

    result: list[object] = []

    def scheduler() -> None:
        try:
            result.append(expire_offers(settings, db))
        except Exception as exc:
            result.append(exc)

    event.listen(db.engine, "before_cursor_execute", pause)
    try:
        thread = threading.Thread(target=scheduler, name="scheduler")
        thread.start()
        assert paused.wait(30)
        try:
            meanwhile()
        finally:
            done.set()
            thread.join(30)
    finally:
        event.remove(db.engine, "before_cursor_execute", pause)
    return result[0]


# The scheduler expires offers one task per transaction. With many tasks in one transaction it held the profiles
# the first task's re-offer locked while it locked the next task and that task's next candidates: on PostgreSQL a
# deadlock, which failed one side (the provider's accept, a re-offer, or every expiry of the run).


def test_expiring_offers_never_deadlocks_with_a_provider_accepting_one(api: Api, settings, db) -> None:
    """A provider accepts an offer on the second task (locking that task, then their own profile) while the
    scheduler has just re-offered the first task to them. (SKIP LOCKED on the task alone would also keep this
    one apart; the re-offer below needs the transaction per task.)"""
    from sqlalchemy import select

    from marketplace.db.models import Offer, OfferStatus

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: no lock-order deadlock")
    (x, _), (y, _), (p, p_h) = bookkeepers(api, 3, capacity=5)
    customer, _ = api.user("customer")
    first, second = uuid.UUID(int=1 << 96), uuid.UUID(int=2 << 96)  # the scheduler takes tasks in id order
    _routed_long_ago(db, customer["id"], {first: [x["id"], p["id"]], second: [y["id"], p["id"]]}, [
        (first, x["id"], -1, OfferStatus.OPEN), (second, y["id"], -1, OfferStatus.OPEN),
        (second, p["id"], 20, OfferStatus.OPEN)])
    with db.session(readonly=True) as session:
        p_offer = session.scalar(select(Offer.id).where(Offer.task_id == second,
                                                        Offer.provider_id == uuid.UUID(p["id"])))
    answers = []
    expired = _expire_with(db, settings, second, lambda: answers.append(
        api.client.post(f"/api/v1/offers/{p_offer}/accept", headers=p_h)))
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["status"] == "accepted"
    assert expired == 1  # the first task's; the second one's expired offer was withdrawn on accept
    with db.session(readonly=True) as session:
        assert session.scalars(select(Offer.provider_id).where(
            Offer.task_id == first, Offer.status == OfferStatus.OPEN)).all() == [uuid.UUID(p["id"])]


def test_expiring_offers_never_deadlocks_with_a_re_offer_of_another_task(api: Api, settings, db) -> None:
    """Another task is re-offered (the reoffer_task job locks its new providers in id order) to the provider the
    scheduler has just re-offered the first task to and to the one it is about to re-offer the second to."""
    from sqlalchemy import select

    from marketplace.db.models import Offer, OfferStatus
    from marketplace.domain.routing.engine import get_engine
    from marketplace.domain.routing.services import reoffer

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: no lock-order deadlock")
    people = sorted((a["id"] for a, _ in bookkeepers(api, 5, capacity=5)), key=uuid.UUID)
    low, x, y, z, high = people  # the re-offer locks low, then high
    customer, _ = api.user("customer")
    first, second, third = (uuid.UUID(int=n << 96) for n in (1, 2, 3))
    _routed_long_ago(db, customer["id"], {first: [x, high], second: [y, low], third: [x, y, z]}, [
        (first, x, -1, OfferStatus.OPEN), (second, y, -1, OfferStatus.OPEN),
        *((third, pid, 20, OfferStatus.DECLINED) for pid in (x, y, z))])
    engine = get_engine()
    with db.session(readonly=True) as session:  # what the job does before its write transaction
        engine.refresh_providers(session)
    outcome = []

    def re_offer_third() -> None:
        with db.session() as session:
            outcome.append(reoffer(session, settings, engine, third, 2))

    assert _expire_with(db, settings, second, re_offer_third) == 2
    assert outcome == ["reoffered"]
    with db.session(readonly=True) as session:
        open_ = session.execute(select(Offer.task_id, Offer.provider_id).where(Offer.status == OfferStatus.OPEN))
        assert sorted((t, str(p)) for t, p in open_) == [(first, high), (second, low), (third, low), (third, high)]
