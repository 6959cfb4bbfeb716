"""Load the taxonomy and the demo people idempotently: running it twice changes nothing the second time."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import Account, Category, CategoryExample, PartnerProfile, ProviderProfile, Role
from marketplace.domain.accounts.services import attribute_referral, create_account
from marketplace.domain.tasks.schemas import Money, TaskIn
from marketplace.domain.tasks.services import create_task

DEMO_PASSWORD = "relay-demo-password"


def _json(name: str) -> dict[str, Any]:
    return json.loads(resources.files("marketplace.demo").joinpath(name).read_text(encoding="utf-8"))


def load_taxonomy(session: Session) -> dict[str, int]:
    """Upsert categories by slug; replace seed examples, keep examples learned from feedback."""
    data = _json("taxonomy.json")
    created = updated = 0
    for spec in data["categories"]:
        category = session.scalar(select(Category).where(Category.slug == spec["slug"]))
        if category is None:
            category = Category(slug=spec["slug"], name=spec["name"], description=spec["description"],
                                playbook=spec["playbook"], questions=spec["questions"], active=True)
            session.add(category)
            session.flush()
            created += 1
        else:
            changed = (category.name, category.description, category.playbook, category.questions) != (
                spec["name"], spec["description"], spec["playbook"], spec["questions"])
            if changed:
                category.name, category.description = spec["name"], spec["description"]
                category.playbook, category.questions = spec["playbook"], spec["questions"]
                updated += 1
        seed = {e.text: e for e in session.scalars(
            select(CategoryExample).where(CategoryExample.category_id == category.id,
                                          CategoryExample.source == "seed"))}
        wanted = list(dict.fromkeys(spec["examples"]))
        for text in wanted:
            if text not in seed:
                session.add(CategoryExample(category_id=category.id, text=text, source="seed"))
        for text, example in seed.items():
            if text not in wanted:
                session.delete(example)
    session.flush()
    return {"created": created, "updated": updated}


def load_people(session: Session) -> dict[str, int]:
    data = _json("people.json")
    counts = {"providers": 0, "partners": 0, "customers": 0, "tasks": 0}

    def existing(email: str) -> Account | None:
        return session.scalar(select(Account).where(Account.email == email))

    for p in data["providers"]:
        if existing(p["email"]):
            continue
        account = create_account(session, p["email"], DEMO_PASSWORD, Role.PROVIDER, p["display_name"])
        profile = session.get(ProviderProfile, account.id)
        profile.headline, profile.description = p["headline"], p["description"]
        profile.skills, profile.categories, profile.languages = p["skills"], p["categories"], p["languages"]
        profile.hourly_rate, profile.rate_currency = Decimal(str(p["hourly_rate"])), p["rate_currency"]
        profile.capacity, profile.accepting_work = p["capacity"], p["accepting_work"]
        counts["providers"] += 1
    partners: dict[str, Account] = {}
    for p in data["partners"]:
        account = existing(p["email"])
        if account is None:
            account = create_account(session, p["email"], DEMO_PASSWORD, Role.PARTNER, p["display_name"])
            profile = session.get(PartnerProfile, account.id)
            profile.referral_code, profile.expertise = p["referral_code"], p["expertise"]
            counts["partners"] += 1
        partners[p["referral_code"]] = account
    for c in data["customers"]:
        if existing(c["email"]):
            continue
        account = create_account(session, c["email"], DEMO_PASSWORD, Role.CUSTOMER, c["display_name"])
        if c.get("referral_code"):
            attribute_referral(session, partners[c["referral_code"]].id, account.id)
        counts["customers"] += 1
        for t in c.get("tasks", []):
            budget = t.get("budget")
            create_task(session, account.id, TaskIn(
                title=t["title"], description=t["description"],
                budget=Money(Decimal(budget["amount"]), budget["currency"]) if budget else None,
                deadline=now() + timedelta(days=t["deadline_days"]) if t.get("deadline_days") else None,
            ))
            counts["tasks"] += 1
    session.flush()
    return counts
