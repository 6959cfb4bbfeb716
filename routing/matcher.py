"""Matcher: rank providers for a routed task, with every score component exposed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import numpy as np

WEIGHTS = {"semantic": 0.45, "category": 0.35, "availability": 0.1, "price": 0.1}


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    provider_id: str
    vector: np.ndarray  # L2-normalized profile embedding
    categories: frozenset[str]
    capacity: int
    load: int  # tasks assigned or in progress plus open offers
    accepting_work: bool
    hourly_rate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    provider_id: str
    score: float
    components: dict[str, float]


class Matcher:
    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = weights or WEIGHTS

    @staticmethod
    def eligible(p: ProviderRecord) -> bool:
        return p.accepting_work and p.load < p.capacity

    def rank(self, task_vector: np.ndarray | None, categories: list[str], providers: list[ProviderRecord],
             budget: Decimal | None = None, exclude: set[str] | None = None,
             limit: int | None = None, require_category: bool = True) -> list[Candidate]:
        """Eligible providers (accepting work, spare capacity, not excluded), best first.

        With ``require_category`` (the default) only providers who declared one of the task's categories
        are candidates: a good semantic match from another trade is not someone the customer asked for.
        Without a task vector (the customer objected to AI processing) semantic fit counts as 0.
        """
        exclude = exclude or set()
        wanted = set(categories)
        pool = [p for p in providers if self.eligible(p) and p.provider_id not in exclude
                and (not require_category or not wanted or p.categories & wanted)]
        if not pool:
            return []
        sims = (np.zeros(len(pool), dtype=np.float32) if task_vector is None
                else np.stack([p.vector for p in pool]) @ np.asarray(task_vector, dtype=np.float32))
        primary, secondary = (categories[0], set(categories[1:])) if categories else (None, set())
        out = []
        for p, sim in zip(pool, sims, strict=True):
            components = {
                "semantic": round(max(0.0, float(sim)), 4),
                "category": 1.0 if primary in p.categories else (0.6 if p.categories & secondary else 0.0),
                "availability": round(1 - p.load / p.capacity, 4),
                "price": self._price_fit(p.hourly_rate, budget),
            }
            score = sum(self.weights[k] * v for k, v in components.items())
            out.append(Candidate(p.provider_id, round(score, 4), components))
        out.sort(key=lambda c: (-c.score, c.provider_id))
        return out if limit is None else out[:limit]

    @staticmethod
    def _price_fit(rate: Decimal | None, budget: Decimal | None) -> float:
        """1.0 when ten hours at the provider's rate fit in the budget, falling off as they don't."""
        if rate is None or budget is None or rate <= 0:
            return 0.5
        ratio = float(budget) / (float(rate) * 10)
        return round(min(1.0, max(0.0, ratio)), 4)
