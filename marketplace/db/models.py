"""SQLAlchemy ORM models. Every column carries a data-map tag (see ``marketplace.privacy.datamap``)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from marketplace.clock import now
from marketplace.db.types import UTCDateTime
from marketplace.privacy.datamap import DataCategory as C
from marketplace.privacy.datamap import data

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Foreign keys to accounts that carry work or money (tasks, offers, referrals) are RESTRICT: an account
    is removed only through the privacy engine's erasure, which decides what is deleted and what is
    anonymised, never by a cascade."""

    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e],
                validate_strings=True, create_constraint=False)


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    PROVIDER = "provider"
    PARTNER = "partner"
    STAFF = "staff"


class TaskStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    ROUTING = "routing"
    ROUTED = "routed"
    NEEDS_REVIEW = "needs_review"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class OfferStatus(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class RoutingOutcome(enum.StrEnum):
    ROUTED = "routed"
    NEEDS_REVIEW = "needs_review"


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = _pk()
    email: Mapped[str] = data(C.CONTACT, "account_lifetime", String(254), unique=True)
    password_hash: Mapped[str] = data(C.CREDENTIAL, "account_lifetime", String(200))
    role: Mapped[Role] = data(C.OPERATIONAL, None, _enum(Role))
    display_name: Mapped[str] = data(C.IDENTITY, "account_lifetime", String(80))
    ai_processing_objection: Mapped[bool] = data(C.PROFILE, "account_lifetime", Boolean, default=False)
    is_active: Mapped[bool] = data(C.OPERATIONAL, None, Boolean, default=True)
    created_at: Mapped[datetime] = data(C.ACTIVITY, "account_lifetime", UTCDateTime, default=now)

    provider_profile: Mapped[ProviderProfile | None] = relationship(back_populates="account", uselist=False)
    partner_profile: Mapped[PartnerProfile | None] = relationship(back_populates="account", uselist=False)


class AuthToken(Base):
    __tablename__ = "auth_tokens"

    id: Mapped[uuid.UUID] = _pk()
    account_id: Mapped[uuid.UUID] = data(C.PARTY, "session", ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = data(C.CREDENTIAL, "session", String(64), unique=True)
    created_at: Mapped[datetime] = data(C.ACTIVITY, "session", UTCDateTime, default=now)
    expires_at: Mapped[datetime] = data(C.OPERATIONAL, None, UTCDateTime)
    revoked_at: Mapped[datetime | None] = data(C.ACTIVITY, "session", UTCDateTime, nullable=True)


class LoginFailure(Base):
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_email_key_at", "email_key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # A keyed hash of the normalized email: enough to count attempts, useless if leaked.
    email_key: Mapped[str] = data(C.SECURITY, "security_log", String(64))
    at: Mapped[datetime] = data(C.SECURITY, "security_log", UTCDateTime, default=now)


class ProviderProfile(Base):
    __tablename__ = "provider_profiles"

    account_id: Mapped[uuid.UUID] = data(
        C.PARTY, "account_lifetime", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    headline: Mapped[str] = data(C.PROFILE, "account_lifetime", String(120), default="")
    description: Mapped[str] = data(C.PROFILE, "account_lifetime", Text, default="")
    skills: Mapped[list[str]] = data(C.PROFILE, "account_lifetime", JSON, default=list)
    categories: Mapped[list[str]] = data(C.PROFILE, "account_lifetime", JSON, default=list)
    languages: Mapped[list[str]] = data(C.PROFILE, "account_lifetime", JSON, default=list)
    hourly_rate: Mapped[Decimal | None] = data(C.FINANCIAL, "account_lifetime", Numeric(10, 2), nullable=True)
    # ISO 4217 code of hourly_rate; the matcher compares a rate with a budget only in the same currency
    rate_currency: Mapped[str | None] = data(C.FINANCIAL, "account_lifetime", String(3), nullable=True)
    capacity: Mapped[int] = data(C.PROFILE, "account_lifetime", Integer, default=1)
    accepting_work: Mapped[bool] = data(C.PROFILE, "account_lifetime", Boolean, default=False)
    # indexed: routing checks the newest change before every batch (RoutingEngine.provider_index)
    updated_at: Mapped[datetime] = data(C.ACTIVITY, "account_lifetime", UTCDateTime, default=now, onupdate=now,
                                        index=True)

    account: Mapped[Account] = relationship(back_populates="provider_profile")


class PartnerProfile(Base):
    __tablename__ = "partner_profiles"

    account_id: Mapped[uuid.UUID] = data(
        C.PARTY, "account_lifetime", ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    referral_code: Mapped[str] = data(C.PROFILE, "account_lifetime", String(16), unique=True)
    expertise: Mapped[list[str]] = data(C.PROFILE, "account_lifetime", JSON, default=list)
    # indexed: routing checks the newest change before every batch (RoutingEngine.partners)
    updated_at: Mapped[datetime] = data(C.ACTIVITY, "account_lifetime", UTCDateTime, default=now, onupdate=now,
                                        index=True)

    account: Mapped[Account] = relationship(back_populates="partner_profile")


class Referral(Base):
    __tablename__ = "referrals"

    id: Mapped[uuid.UUID] = _pk()
    partner_id: Mapped[uuid.UUID] = data(C.PARTY, "account_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"),
                                         index=True)
    # unique: a customer is attributed to one partner for good (the first one wins)
    customer_id: Mapped[uuid.UUID] = data(
        C.PARTY, "account_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"), unique=True
    )
    created_at: Mapped[datetime] = data(C.ACTIVITY, "account_lifetime", UTCDateTime, default=now)


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[uuid.UUID] = _pk()
    slug: Mapped[str] = data(C.OPERATIONAL, None, String(60), unique=True)
    name: Mapped[str] = data(C.OPERATIONAL, None, String(120))
    description: Mapped[str] = data(C.OPERATIONAL, None, Text)
    playbook: Mapped[list[str]] = data(C.OPERATIONAL, None, JSON, default=list)
    questions: Mapped[list[str]] = data(C.OPERATIONAL, None, JSON, default=list)
    active: Mapped[bool] = data(C.OPERATIONAL, None, Boolean, default=True)

    examples: Mapped[list[CategoryExample]] = relationship(back_populates="category", order_by="CategoryExample.id")


class CategoryExample(Base):
    __tablename__ = "category_examples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    category_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)
    # Seed examples are ours; examples learned from staff feedback come from task text.
    text: Mapped[str] = data(C.USER_CONTENT, "task_lifetime", Text)
    source: Mapped[str] = data(C.OPERATIONAL, None, String(20), default="seed")
    task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), nullable=True, index=True
    )

    category: Mapped[Category] = relationship(back_populates="examples")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_status_created_at", "status", "created_at"),)

    id: Mapped[uuid.UUID] = _pk()
    customer_id: Mapped[uuid.UUID] = data(C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"),
                                          index=True)
    title: Mapped[str] = data(C.USER_CONTENT, "task_lifetime", String(200))
    description: Mapped[str] = data(C.USER_CONTENT, "task_lifetime", Text)
    budget_amount: Mapped[Decimal | None] = data(C.FINANCIAL, "task_lifetime", Numeric(12, 2), nullable=True)
    budget_currency: Mapped[str | None] = data(C.FINANCIAL, "task_lifetime", String(3), nullable=True)
    deadline: Mapped[datetime | None] = data(C.USER_CONTENT, "task_lifetime", UTCDateTime, nullable=True)
    status: Mapped[TaskStatus] = data(C.OPERATIONAL, None, _enum(TaskStatus), default=TaskStatus.SUBMITTED)
    category_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("categories.id"), nullable=True)
    # The category a customer who objects to AI processing chose when posting: staff place the task, and
    # see this choice first. Not a routing decision (no model reads the task).
    requested_category_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("categories.id"), nullable=True)
    assigned_provider_id: Mapped[uuid.UUID | None] = data(
        C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = data(C.ACTIVITY, "task_lifetime", UTCDateTime, default=now)
    updated_at: Mapped[datetime] = data(C.ACTIVITY, "task_lifetime", UTCDateTime, default=now, onupdate=now)

    category: Mapped[Category | None] = relationship(foreign_keys=[category_id])
    transitions: Mapped[list[TaskTransition]] = relationship(order_by="TaskTransition.id")


class Rating(Base):
    """A customer's rating of the provider who completed their task: one per task. Feeds the matcher's rating
    component (routing.matcher)."""

    __tablename__ = "ratings"
    __table_args__ = (CheckConstraint("stars BETWEEN 1 AND 5", name="stars_range"),)

    id: Mapped[uuid.UUID] = _pk()
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True)
    provider_id: Mapped[uuid.UUID] = data(C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"),
                                          index=True)
    customer_id: Mapped[uuid.UUID] = data(C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"))
    stars: Mapped[int] = data(C.USER_CONTENT, "task_lifetime", Integer)
    comment: Mapped[str | None] = data(C.USER_CONTENT, "task_lifetime", Text, nullable=True)
    # indexed: routing checks the newest rating before every batch (RoutingEngine.provider_index)
    created_at: Mapped[datetime] = data(C.ACTIVITY, "task_lifetime", UTCDateTime, default=now, index=True)


class TaskTransition(Base):
    __tablename__ = "task_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[TaskStatus | None] = data(C.OPERATIONAL, None, _enum(TaskStatus), nullable=True)
    to_status: Mapped[TaskStatus] = data(C.OPERATIONAL, None, _enum(TaskStatus))
    # None = the system (routing worker, scheduler)
    actor_id: Mapped[uuid.UUID | None] = data(
        C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True
    )
    actor_role: Mapped[str] = data(C.OPERATIONAL, None, String(20))
    reason: Mapped[str] = data(C.USER_CONTENT, "task_lifetime", Text, default="")
    at: Mapped[datetime] = data(C.ACTIVITY, "task_lifetime", UTCDateTime, default=now)


class RoutingDecision(Base):
    __tablename__ = "routing_decisions"

    id: Mapped[uuid.UUID] = _pk()
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[RoutingOutcome] = data(C.OPERATIONAL, None, _enum(RoutingOutcome))
    # [{"slug": ..., "score": ...}], primary first
    categories: Mapped[list[dict[str, Any]]] = data(C.AI_OUTPUT, "task_lifetime", JSON, default=list)
    explanation: Mapped[dict[str, Any]] = data(C.AI_OUTPUT, "task_lifetime", JSON, default=dict)
    # ranked providers with score components, used to re-offer without re-running the model
    candidates: Mapped[list[dict[str, Any]]] = data(C.AI_OUTPUT, "task_lifetime", JSON, default=list)
    model_id: Mapped[str] = data(C.OPERATIONAL, None, String(120))
    taxonomy_version: Mapped[str] = data(C.OPERATIONAL, None, String(64))
    decided_by: Mapped[uuid.UUID | None] = data(
        C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = data(C.ACTIVITY, "task_lifetime", UTCDateTime, default=now)


class Offer(Base):
    __tablename__ = "offers"
    __table_args__ = (
        UniqueConstraint("task_id", "provider_id"),
        Index("ix_offers_status_expires_at", "status", "expires_at"),
        Index("ix_offers_provider_id_status", "provider_id", "status"),
    )

    id: Mapped[uuid.UUID] = _pk()
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[uuid.UUID] = data(C.PARTY, "offer_lifetime", ForeignKey("accounts.id", ondelete="RESTRICT"))
    status: Mapped[OfferStatus] = data(C.OPERATIONAL, None, _enum(OfferStatus), default=OfferStatus.OPEN)
    rank: Mapped[int] = data(C.OPERATIONAL, None, Integer)
    score: Mapped[float] = data(C.AI_OUTPUT, "offer_lifetime", Numeric(6, 4))
    # What the score is made of (routing.matcher: semantic fit, category, availability, price, rating,
    # fairness), as ranked when the offer was made; the provider sees their own, staff see every candidate's.
    components: Mapped[dict[str, float] | None] = data(C.AI_OUTPUT, "offer_lifetime", JSON, nullable=True)
    created_at: Mapped[datetime] = data(C.ACTIVITY, "offer_lifetime", UTCDateTime, default=now)
    expires_at: Mapped[datetime] = data(C.OPERATIONAL, None, UTCDateTime)
    responded_at: Mapped[datetime | None] = data(C.ACTIVITY, "offer_lifetime", UTCDateTime, nullable=True)
    decline_reason: Mapped[str | None] = data(C.USER_CONTENT, "offer_lifetime", Text, nullable=True)
    # Why, as a code (marketplace.domain.offers.services.DECLINE_CODES); "wrong_category" declines send the
    # task back to staff, whose placement then becomes a labelled example for the router.
    decline_code: Mapped[str | None] = data(C.OPERATIONAL, None, String(20), nullable=True)
    suggested_category: Mapped[str | None] = data(C.OPERATIONAL, None, String(80), nullable=True)
    # What the provider sent the customer on accepting: the AI draft as they approved or edited it, or their
    # own words. Drafts are never sent by themselves; these two flags say where the text came from.
    proposal: Mapped[str | None] = data(C.USER_CONTENT, "offer_lifetime", Text, nullable=True)
    proposal_from_draft: Mapped[bool | None] = data(C.ACTIVITY, "offer_lifetime", Boolean, nullable=True)
    proposal_edited: Mapped[bool | None] = data(C.ACTIVITY, "offer_lifetime", Boolean, nullable=True)

    task: Mapped[Task] = relationship()


class Draft(Base):
    """A suggestion a person edits or approves before anything is sent: a provider's proposal for an offer,
    or the question staff may send a customer whose task routing could not place."""

    __tablename__ = "drafts"

    id: Mapped[uuid.UUID] = _pk()
    offer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("offers.id", ondelete="CASCADE"), unique=True,
                                                       nullable=True)
    # set for a clarifying question (offer_id is then None)
    task_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), unique=True,
                                                      nullable=True)
    kind: Mapped[str] = data(C.OPERATIONAL, None, String(30), default="proposal")  # proposal | clarifying_question
    text: Mapped[str] = data(C.AI_OUTPUT, "offer_lifetime", Text)
    engine: Mapped[str] = data(C.OPERATIONAL, None, String(40))
    model_id: Mapped[str] = data(C.OPERATIONAL, None, String(120))
    # sha256 of the generative model's weights file, when that model ran (None: composer only)
    weights_hash: Mapped[str | None] = data(C.OPERATIONAL, None, String(64), nullable=True)
    # the grounding guard's verdict on the generated text: accepted, sentences kept, dropped ones and why
    guard: Mapped[dict[str, Any] | None] = data(C.AI_OUTPUT, "offer_lifetime", JSON, nullable=True)
    # part of the draft -> where it came from (shown to the provider)
    sources: Mapped[dict[str, str] | None] = data(C.OPERATIONAL, None, JSON, nullable=True)
    created_at: Mapped[datetime] = data(C.ACTIVITY, "offer_lifetime", UTCDateTime, default=now)


class Message(Base):
    """A message on a task, between the customer and Relay's staff (threads with providers come later)."""

    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = _pk()
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[uuid.UUID | None] = data(
        C.PARTY, "task_lifetime", ForeignKey("accounts.id", ondelete="SET NULL"), nullable=True
    )
    author_role: Mapped[str] = data(C.OPERATIONAL, None, String(20))
    body: Mapped[str] = data(C.USER_CONTENT, "task_lifetime", Text)
    # whether the text started as one of our drafts, and whether the sender changed it
    from_draft: Mapped[bool] = data(C.ACTIVITY, "task_lifetime", Boolean, default=False)
    edited: Mapped[bool | None] = data(C.ACTIVITY, "task_lifetime", Boolean, nullable=True)
    created_at: Mapped[datetime] = data(C.ACTIVITY, "task_lifetime", UTCDateTime, default=now)


class OutboxMessage(Base):
    """A job written in the same transaction as the change that needs it; relayed to the broker after commit."""

    __tablename__ = "outbox"
    __table_args__ = (
        # the relay's query: pending rows, oldest first
        Index("ix_outbox_pending", "created_at", postgresql_where=text("dispatched_at IS NULL"),
              sqlite_where=text("dispatched_at IS NULL")),
        Index("ix_outbox_dispatched_at", "dispatched_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    actor_name: Mapped[str] = data(C.OPERATIONAL, None, String(80))
    queue_name: Mapped[str] = data(C.OPERATIONAL, None, String(40))
    # ids only: never personal data in a job payload
    args: Mapped[list[Any]] = data(C.OPERATIONAL, None, JSON, default=list)
    created_at: Mapped[datetime] = data(C.OPERATIONAL, None, UTCDateTime, default=now)
    dispatched_at: Mapped[datetime | None] = data(C.OPERATIONAL, None, UTCDateTime, nullable=True)
    attempts: Mapped[int] = data(C.OPERATIONAL, None, Integer, default=0)
