"""Each role's main journey through the portal, in a real browser against the real app."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DEMO_PASSWORD, STAFF_EMAIL, STAFF_PASSWORD, ApiClient

pytestmark = [pytest.mark.browser, pytest.mark.model]


def sign_in(page: Any, server: str, email: str, password: str) -> None:
    page.goto(f"{server}/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_customer_signs_up_with_a_referral_posts_a_task_and_sees_where_it_went(page: Any, server: str) -> None:
    page.goto(f"{server}/signup?ref=BRIGHT24")
    expect(page.get_by_label("Referral code")).to_have_value("BRIGHT24")
    expect(page.get_by_label("Customer", exact=True)).to_be_checked()
    page.get_by_label("Display name").fill("Robin Customer")
    page.get_by_label("Email").fill(f"robin-{uuid.uuid4().hex[:6]}@example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Sign up").click()
    # the error is announced in the summary and shown next to the field; what was typed is kept
    expect(page.get_by_role("alert")).to_contain_text("Use at least 10 characters")
    expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Display name")).to_have_value("Robin Customer")
    page.get_by_label("Password").fill("a-long-enough-password")
    page.get_by_role("button", name="Sign up").click()

    expect(page.get_by_role("heading", name="My tasks")).to_be_visible()
    page.get_by_role("link", name="Post your first task").click()
    page.get_by_label("Title").fill("Leaking kitchen tap")
    page.get_by_label("Description").fill("The kitchen mixer tap drips all night; please replace the cartridge "
                                          "and check the valve under the sink.")
    # suggestions appear while typing, from the live router
    expect(page.locator("#suggestions")).to_contain_text("Plumbing")
    page.get_by_role("button", name="Post task").click()

    expect(page.get_by_role("heading", name="Leaking kitchen tap")).to_be_visible()
    # the page follows routing by itself (HTMX) and explains the decision in plain words
    expect(page.locator("#task-status")).to_contain_text("Offered to providers", timeout=60_000)
    expect(page.locator("#task-status")).to_contain_text("This looks like Plumbing")
    expect(page.locator("#timeline")).to_contain_text("Offered to providers")
    page.get_by_text("Cancel this task").click()  # reachable, not used


def test_provider_sets_up_a_profile_and_accepts_an_offer_with_the_ai_draft(page: Any, server: str,
                                                                        api: ApiClient) -> None:
    email = f"casey-{uuid.uuid4().hex[:6]}@example.com"
    page.goto(f"{server}/signup")
    page.get_by_label("Provider", exact=True).check()
    page.get_by_label("Display name").fill("Casey Cleans")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("a-long-enough-password")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Offers")).to_be_visible()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Profile").click()
    page.get_by_label("Headline").fill("Home and end-of-tenancy cleaning")
    page.get_by_label("About your work").fill("Deep cleaning of flats and houses, ovens, windows, carpets.")
    page.get_by_label("Skills").fill("deep cleaning, end of tenancy, ovens")
    page.get_by_label("House cleaning").check()
    page.get_by_label("Capacity").fill("3")
    page.get_by_label("I am accepting new work").check()
    page.get_by_role("button", name="Save profile").click()
    expect(page.get_by_role("status")).to_contain_text("Profile saved")

    _, customer = api.signup("customer")
    title = f"Deep clean before moving out {uuid.uuid4().hex[:4]}"
    task_id = api.post_task(customer, title, "Deep clean a two-bedroom flat after the tenants moved out: kitchen, "
                                             "oven, bathroom and windows.")
    api.wait_status(customer, task_id, {"routed"})

    offer = page.locator("article.offer", has_text=title)
    proposal = offer.get_by_label("Your proposal to the customer")
    deadline = time.monotonic() + 30
    while True:  # the draft is written by a worker job just after the offer is made
        page.goto(f"{server}/offers")
        if proposal.input_value().strip() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    draft = proposal.input_value()
    assert len(draft) > 80, "the AI draft is shown as the proposal, ready to edit"
    proposal.fill(draft + "\n\nI can come on Saturday morning.")
    offer.get_by_role("button", name="Accept").click()

    expect(page.get_by_role("heading", name="My work")).to_be_visible()
    row = page.locator("li", has_text=title)
    expect(row).to_contain_text("Provider assigned")
    row.get_by_role("button", name="Start work").click()
    expect(page.locator("li", has_text=title)).to_contain_text("In progress")

    # the customer reads the proposal as the provider edited it
    seen = api.http.get(f"/api/v1/tasks/{task_id}", headers=customer).json()
    assert seen["assigned_provider"]["display_name"] == "Casey Cleans"
    assert seen["proposal"]["text"].endswith("I can come on Saturday morning.")
    assert seen["proposal"]["from_draft"] is True and seen["proposal"]["edited"] is True


def test_partner_sees_the_referral_funnel_and_chart_without_task_text(page: Any, server: str,
                                                                      api: ApiClient) -> None:
    _, customer = api.signup("customer", referral_code="NGDIGI7")
    secret_title = f"Private shop rebuild {uuid.uuid4().hex[:6]}"
    task_id = api.post_task(customer, secret_title, "Rebuild our online shop in Django with Stripe payments.")
    api.wait_status(customer, task_id, {"routed", "needs_review"})

    sign_in(page, server, "northgate@partners.example", DEMO_PASSWORD)
    expect(page.get_by_role("heading", name="Referrals")).to_be_visible()
    expect(page.get_by_label("Referral link")).to_have_value(re.compile(r"/signup\?ref=NGDIGI7$"))
    page.get_by_role("button", name="Copy link").click()
    expect(page.get_by_role("status")).to_contain_text("Copied")

    funnel = page.locator(".funnel")
    referred = int(funnel.locator(".stage-referred strong").inner_text())
    posted = int(funnel.locator(".stage-posted strong").inner_text())
    assert referred >= 2 and 1 <= posted <= referred  # the demo's referred customer and ours
    expect(page.get_by_role("img", name="Tasks of the customers you referred, by week posted")).to_be_visible()
    assert page.locator("svg.chart rect").count() >= 1, "this week's bar is drawn"
    body = page.content()
    assert secret_title not in body and "Stripe" not in body, "no task text reaches a partner"
    assert "@example.com" not in body, "no contact data reaches a partner"


def test_staff_routes_a_task_from_the_review_queue_in_one_click(page: Any, server: str, api: ApiClient) -> None:
    _, customer = api.signup("customer")
    title = f"Unusual request {uuid.uuid4().hex[:6]}"
    task_id = api.post_task(customer, title, "zxq vlorp trandle quibb mernox fasht plovi wuzzle krett")
    api.wait_status(customer, task_id, {"needs_review"})

    sign_in(page, server, STAFF_EMAIL, STAFF_PASSWORD)
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    card = page.locator("article.review", has_text=title)
    expect(card).to_be_visible()
    card.get_by_text("Another category").click()
    card.get_by_label("Category").select_option(label="House cleaning")
    card.get_by_role("button", name="Route", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("is placed")
    expect(page.locator("article.review", has_text=title)).to_have_count(0)

    status = api.wait_status(customer, task_id, {"routed", "needs_review"}, timeout=60)
    seen = api.http.get(f"/api/v1/tasks/{task_id}", headers=customer).json()
    assert seen["routing"]["categories"][0]["slug"] == "house-cleaning"
    assert status == "routed"
    assert any(t["actor_role"] == "staff" for t in seen["transitions"])
