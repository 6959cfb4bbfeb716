"""The whole journey through the API, in the default mode (in-process dramatiq worker, real local model)."""

from __future__ import annotations

import pytest

from tests.conftest import Api

pytestmark = pytest.mark.model

WEB_TASK = ("Online ordering website for my bakery",
            "I need a responsive website for my bakery with our menu, opening hours and an online "
            "pre-order form for cakes, built on WordPress or similar.")


def setup_web_providers(api: Api) -> list[tuple[dict, dict]]:
    return [
        api.provider(["web-development"], "Full-stack web developer",
                     "I build fast WordPress and Django websites with online shops and order forms."),
        api.provider(["web-development", "ux-ui-design"], "Frontend developer for small businesses",
                     "Responsive sites, landing pages and web forms for shops and restaurants."),
        api.provider(["bookkeeping-accounting"], "Bookkeeper", "I reconcile accounts in QuickBooks and Xero."),
    ]


def test_partner_referral_to_routed_accepted_task_with_draft(api: Api) -> None:
    c = api.client
    partner, partner_h = api.user("partner")
    code = partner["referral_code"]
    assert code and code.isupper()

    customer, customer_h = api.user("customer", referral_code=code.lower())  # codes are case-insensitive
    assert customer["referred_by_partner"] is True
    providers = setup_web_providers(api)

    task_id = api.post_task(customer_h, *WEB_TASK, budget={"amount": "900", "currency": "usd"})
    api.drain()

    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "routed"
    routing = task["routing"]
    assert routing["decision"] == "routed"
    assert routing["categories"][0]["slug"] == "web-development"
    assert 0 < routing["categories"][0]["score"] <= 1
    assert "Web development" in routing["explanation"]
    assert routing["evidence"]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert routing["evidence"]["encoder_backend"] in ("torch", "onnx", "onnx-int8")
    assert routing["evidence"]["taxonomy_version"] and routing["evidence"]["threshold"] > 0
    assert routing["evidence"]["nearest_examples"]
    assert "suggested_partner_ids" not in routing["evidence"]
    assert task["budget"] == {"amount": "900.00", "currency": "USD"}
    assert [t["to_status"] for t in task["transitions"]] == ["submitted", "routing", "routed"]

    # Both web developers got an offer; the bookkeeper (wrong category, low fit) is ranked below them.
    inboxes = {}
    for account, headers in providers:
        inboxes[account["email"]] = c.get("/api/v1/offers?status=open", headers=headers).json()["items"]
    web_offers = [inboxes[a["email"]] for a, _ in providers[:2]]
    assert all(len(items) == 1 and items[0]["task_id"] == task_id for items in web_offers)
    first_offer = web_offers[0][0]
    assert first_offer["rank"] in (1, 2)
    assert first_offer["draft_ready"] is True

    # A draft proposal was written for each offer, grounded in the task.
    web_account, web_h = providers[0]
    draft = c.get(f"/api/v1/offers/{first_offer['id']}/draft", headers=web_h).json()
    assert draft["engine"] == "composer"
    assert WEB_TASK[0] in draft["text"]
    assert web_account["display_name"] in draft["text"]

    r = c.post(f"/api/v1/offers/{first_offer['id']}/accept", headers=web_h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "assigned"
    assert task["assigned_provider"]["id"] == web_account["id"]
    # the other web developer's offer was withdrawn and can no longer be accepted
    other_offer = web_offers[1][0]
    _, other_h = providers[1]
    assert c.get(f"/api/v1/offers/{other_offer['id']}", headers=other_h).json()["status"] == "withdrawn"
    assert c.post(f"/api/v1/offers/{other_offer['id']}/accept", headers=other_h).status_code == 409

    referrals = c.get("/api/v1/partners/me/referrals", headers=partner_h).json()
    assert referrals["referral_code"] == code
    assert len(referrals["customers"]) == 1
    referred = referrals["customers"][0]
    assert referred["ref"].startswith("C-")
    assert referred["tasks"] == [{"status": "assigned", "category": "web-development",
                                  "posted_at": referred["tasks"][0]["posted_at"]}]
    body = str(referrals)
    for secret in (WEB_TASK[0], "bakery", customer["email"], customer["display_name"], customer["id"]):
        assert secret not in body

    # The rest of the lifecycle.
    assert c.post(f"/api/v1/tasks/{task_id}/start", headers=web_h).json()["status"] == "in_progress"
    assert c.post(f"/api/v1/tasks/{task_id}/deliver", headers=web_h, json={"reason": "site is live"}).json()[
        "status"] == "delivered"
    done = c.post(f"/api/v1/tasks/{task_id}/complete", headers=customer_h).json()
    assert done["status"] == "completed"
    assert [t["to_status"] for t in done["transitions"]][-4:] == ["assigned", "in_progress", "delivered", "completed"]
    assert all(t["actor_role"] for t in done["transitions"])


def test_out_of_scope_task_goes_to_staff_who_route_it_by_hand(api: Api, db) -> None:
    c = api.client
    _, customer_h = api.user("customer")
    setup_web_providers(api)
    task_id = api.post_task(customer_h, "Find me a date for my cousin's wedding",
                            "My cousin is getting married in June and I need someone charming to go with me.")
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "needs_review"
    assert task["routing"]["decision"] == "needs_review"
    assert task["routing"]["categories"] == []
    assert "staff" in task["routing"]["explanation"]

    staff_h = api.staff(db)
    queue = c.get("/api/v1/staff/review-queue", headers=staff_h).json()
    item = next(i for i in queue["items"] if i["id"] == task_id)
    assert item["candidates"] and item["reason"]

    r = c.post(f"/api/v1/staff/tasks/{task_id}/route", headers=staff_h,
               json={"category": "web-development", "reason": "customer wants a wedding website"})
    assert r.status_code == 202, r.text
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "routed"
    assert task["routing"]["categories"] == [{"slug": "web-development", "score": None, "name": "Web development"}]
    assert task["routing"]["evidence"]["source"] == "staff"
    staff_step = next(t for t in task["transitions"] if t["actor_role"] == "staff")
    assert staff_step["reason"] == "customer wants a wedding website"
    assert task_id not in {i["id"] for i in c.get("/api/v1/staff/review-queue", headers=staff_h).json()["items"]}


def test_customer_who_objects_to_ai_is_placed_by_staff_without_the_model(api: Api) -> None:
    c = api.client
    _, customer_h = api.user("customer")
    r = c.put("/api/v1/me/privacy", json={"ai_processing_objection": True}, headers=customer_h)
    assert r.json()["ai_processing_objection"] is True
    task_id = api.post_task(customer_h, *WEB_TASK)
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    assert task["status"] == "needs_review"
    assert task["routing"]["evidence"]["source"] == "objection"
    assert "ranking" not in task["routing"]["evidence"]


def test_a_request_spanning_two_categories_reports_both(api: Api) -> None:
    c = api.client
    api.provider(["copywriting-content-writing"], "Copywriter", "Brochures, web copy and product descriptions.")
    _, customer_h = api.user("customer")
    task_id = api.post_task(customer_h, "Write and design a brochure",
                            "I need copy written and a tri-fold brochure designed for my yoga studio.")
    api.drain()
    task = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()
    slugs = [cat["slug"] for cat in task["routing"]["categories"]]
    assert set(slugs) == {"copywriting-content-writing", "graphic-design"}
    assert task["status"] == "routed"
    assert "and also" in task["routing"]["explanation"]


def test_staff_placements_become_examples_and_the_router_refits(api: Api, db) -> None:
    from sqlalchemy import select

    from marketplace.db.models import CategoryExample

    c = api.client
    api.provider(["web-development"], "Web developer", "Websites and online shops.")
    _, customer_h = api.user("customer")
    first = api.post_task(customer_h, "Find me a date for my cousin's wedding",
                          "My cousin is getting married in June and I need someone charming to go with me.")
    api.drain()
    before = c.get(f"/api/v1/tasks/{first}", headers=customer_h).json()["routing"]["evidence"]
    staff_h = api.staff(db)
    c.post(f"/api/v1/staff/tasks/{first}/route", json={"category": "web-development"}, headers=staff_h)
    api.drain()
    with db.session() as session:
        learned = session.scalars(select(CategoryExample).where(CategoryExample.source == "staff")).all()
    assert [str(e.task_id) for e in learned] == [first]
    second = api.post_task(customer_h, "Logo for my bakery", "A simple round logo with a croissant.")
    api.drain()
    after = c.get(f"/api/v1/tasks/{second}", headers=customer_h).json()["routing"]["evidence"]
    assert after["taxonomy_version"] != before["taxonomy_version"]
    # a learned example is never quoted back to a customer
    assert all("cousin" not in e["text"] for e in after["nearest_examples"])


def test_partners_with_the_tasks_expertise_are_suggested_to_staff_as_assisting_partners(api: Api, db) -> None:
    import uuid

    from sqlalchemy import select, update

    from marketplace.db.models import Account, Category, RoutingDecision
    from routing.matcher import MAX_SUGGESTED_PARTNERS

    c = api.client
    web, web_h = api.user("partner")
    retired, retired_h = api.user("partner")
    _, books_h = api.user("partner")
    referrer, referrer_h = api.user("partner")
    generalist, generalist_h = api.user("partner")
    others = [api.user("partner") for _ in range(MAX_SUGGESTED_PARTNERS)]
    assert c.get("/api/v1/partners/me", headers=web_h).json()["expertise"] == []
    r = c.put("/api/v1/partners/me", json={"expertise": ["web-development", "no-such-category"]}, headers=web_h)
    assert r.status_code == 422 and "no-such-category" in r.text
    with db.session() as session:  # as many categories as a partner may declare, the task's among them
        wide = ["web-development", *session.scalars(
            select(Category.slug).where(Category.active.is_(True), Category.slug != "web-development")
            .order_by(Category.slug).limit(9))]
    for headers, expertise in ((web_h, ["ux-ui-design", "web-development", "web-development"]),
                               (retired_h, ["web-development"]), (books_h, ["bookkeeping-accounting"]),
                               (referrer_h, ["web-development", "ux-ui-design", "copywriting-content-writing"]),
                               (generalist_h, wide),
                               *((h, ["web-development", "ux-ui-design", "seo-online-marketing"]) for _, h in others)):
        r = c.put("/api/v1/partners/me", json={"expertise": expertise}, headers=headers)
        assert r.status_code == 200, r.text
    assert c.get("/api/v1/partners/me", headers=web_h).json()["expertise"] == ["ux-ui-design", "web-development"]
    with db.session() as session:  # an account closed since: no longer suggested
        session.execute(update(Account).where(Account.id == uuid.UUID(retired["id"])).values(is_active=False))

    setup_web_providers(api)
    _, customer_h = api.user("customer", referral_code=referrer["referral_code"])
    task_id = api.post_task(customer_h, *WEB_TASK)
    api.drain()
    staff_view = c.get(f"/api/v1/tasks/{task_id}", headers=api.staff(db)).json()["routing"]
    assert staff_view["categories"][0]["slug"] == "web-development"
    suggested = staff_view["partners"]
    # A few, best first: the partner who referred the customer, then partners of a few categories (the task's
    # among them) in turn; neither the closed account nor the bookkeeping partner, and not the partner who
    # declared ten categories while more focused ones are left.
    focused = {web["id"], *(a["id"] for a, _ in others)}
    assert len(suggested) == MAX_SUGGESTED_PARTNERS
    assert suggested[0]["partner_id"] == referrer["id"]
    assert {p["partner_id"] for p in suggested[1:]} <= focused
    assert suggested[0]["components"] == {"category": 1.0, "referred_customer": 1.0, "focus": 1.0}
    assert all(p["components"] == {"category": 1.0, "referred_customer": 0.0, "focus": 1.0} for p in suggested[1:])
    assert all(p["name"] and p["active"] for p in suggested)
    assert staff_view["evidence"]["suggested_partner_ids"] == [p["partner_id"] for p in suggested]
    assert generalist["id"] not in staff_view["evidence"]["suggested_partner_ids"]
    customer_view = c.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["routing"]
    assert "suggested_partner_ids" not in customer_view["evidence"]
    assert "suggested_partners" not in customer_view["evidence"] and customer_view["partners"] is None

    # A partner whose account was closed after the decision is still listed on it, marked as no longer active.
    second = suggested[1]["partner_id"]
    with db.session() as session:
        session.execute(update(Account).where(Account.id == uuid.UUID(second)).values(is_active=False))
    later = c.get(f"/api/v1/tasks/{task_id}", headers=api.staff(db)).json()["routing"]["partners"]
    assert [(p["partner_id"], p["active"]) for p in later[:2]] == [(referrer["id"], True), (second, False)]

    # A decision stored before partners' scores were (their ids only) still lists them for staff, with names.
    with db.session() as session:
        decision = session.scalar(select(RoutingDecision).where(RoutingDecision.task_id == uuid.UUID(task_id)))
        decision.explanation = {k: v for k, v in decision.explanation.items() if k != "suggested_partners"}
    older = c.get(f"/api/v1/tasks/{task_id}", headers=api.staff(db)).json()["routing"]["partners"]
    assert [(p["partner_id"], p["name"], p["score"], p["components"]) for p in older] == \
        [(p["partner_id"], p["name"], 0.0, {}) for p in suggested]
