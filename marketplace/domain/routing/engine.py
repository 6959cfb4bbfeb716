"""The routing engine of one worker process: encoder, a router fitted per taxonomy version, provider vectors.

It holds the in-memory provider index described in DESIGN.md: profile vectors are cached by profile
``updated_at``, so an edited profile is re-embedded on the next decision and nothing else is.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import CategoryExample, Offer, ProviderProfile
from marketplace.domain.categories.services import load_taxonomy
from marketplace.domain.providers.services import profile_text
from models import Encoder, load_encoder
from routing import Matcher, ProviderRecord, Router, Taxonomy, scrub_pii


# Offers received in this window count towards a provider's share (routing.matcher: fairness).
FAIRNESS_WINDOW = timedelta(days=7)


def task_text(title: str, description: str) -> str:
    return scrub_pii(f"{title}. {description}")


class RoutingEngine:
    def __init__(self, encoder: Encoder | None = None) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()
        self._router: Router | None = None
        self._taxonomy: Taxonomy | None = None
        self._vectors: dict[uuid.UUID, tuple[datetime, np.ndarray]] = {}
        self.matcher = Matcher()

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder()
        return self._encoder

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def backend(self) -> str:
        return getattr(self.encoder, "backend", "torch")

    def router(self, session: Session) -> tuple[Router, Taxonomy]:
        taxonomy = load_taxonomy(session)
        with self._lock:
            if self._router is None or self._taxonomy is None or self._taxonomy.version != taxonomy.version:
                if not taxonomy.categories:
                    raise RuntimeError("no categories with examples: load the taxonomy (relay seed)")
                labels = [c.slug for c in taxonomy.categories for _ in c.examples]
                texts = [e for c in taxonomy.categories for e in c.examples]
                # Decisions quote the nearest examples to customers: only our seed examples may be quoted,
                # never ones learned from other customers' tasks.
                shareable = set(session.scalars(select(CategoryExample.text).where(CategoryExample.source == "seed")))
                quotable = [t if t in shareable else "" for t in texts]
                self._router = Router().fit(labels, self.encoder.encode(texts), quotable)
                self._taxonomy = taxonomy
            return self._router, self._taxonomy

    def encode_task(self, title: str, description: str) -> np.ndarray:
        return self.encoder.encode([task_text(title, description)])[0]

    def provider_records(self, session: Session, loads: dict[uuid.UUID, int]) -> list[ProviderRecord]:
        recent = dict(session.execute(
            select(Offer.provider_id, func.count()).where(Offer.created_at > now() - FAIRNESS_WINDOW)
            .group_by(Offer.provider_id)
        ).all())
        profiles = session.scalars(
            select(ProviderProfile).where(ProviderProfile.accepting_work.is_(True), ProviderProfile.capacity > 0)
        ).all()
        stale = [p for p in profiles if self._vectors.get(p.account_id, (None,))[0] != p.updated_at]
        if stale:
            vectors = self.encoder.encode([profile_text(p) or "provider" for p in stale])
            with self._lock:
                for p, v in zip(stale, vectors, strict=True):
                    self._vectors[p.account_id] = (p.updated_at, v)
        return [
            ProviderRecord(
                provider_id=str(p.account_id), vector=self._vectors[p.account_id][1],
                categories=frozenset(p.categories), capacity=p.capacity, load=loads.get(p.account_id, 0),
                accepting_work=p.accepting_work, hourly_rate=p.hourly_rate,
                recent_offers=recent.get(p.account_id, 0),
            )
            for p in profiles
        ]


_engine: RoutingEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> RoutingEngine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = RoutingEngine()
        return _engine
