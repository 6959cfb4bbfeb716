"""Matcher: rank providers for a routed task, with every score component exposed.

``ProviderIndex`` keeps providers as arrays (vectors, capacity, load, rate) with a per-category row list,
so ranking 100,000 providers is a few vectorized operations on the rows of the task's categories.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

WEIGHTS = {"semantic": 0.35, "category": 0.35, "availability": 0.1, "price": 0.1, "rating": 0.05, "fairness": 0.05}
# Rating: customers' stars (1-5), shrunk towards RATING_PRIOR as if every provider had RATING_PRIOR_WEIGHT
# ratings of that value already, so a newcomer is neither favoured nor penalised and one bad review does not
# sink anyone. The component is the shrunk mean mapped to 0..1.
RATING_PRIOR = 4.0
RATING_PRIOR_WEIGHT = 3.0
SECONDARY_CATEGORY = 0.6
# Fairness: a provider's share of recent offers decays their score, so new providers get exposure and no
# provider takes an outsized share. HALF_EXPOSURE recent offers halve the fairness component.
HALF_EXPOSURE = 5.0
# Hard share cap: among a task's candidates, a provider who received more than SHARE_CAP_FACTOR times an
# equal share of their recent offers (and at least MAX_SHARE of them) goes behind everyone else, whatever
# their score, once the candidates have had MIN_OFFERS_FOR_CAP offers between them. They stay candidates:
# a task is never left unserved because the best provider is busy.
MAX_SHARE = 0.25
SHARE_CAP_FACTOR = 2.0
MIN_OFFERS_FOR_CAP = 10
# Assisting partners (Matcher.suggest_partners): staff are shown a few, not every partner of the category.
MAX_SUGGESTED_PARTNERS = 3
FOCUSED_CATEGORIES = 3  # a partner of up to this many categories is fully focused on each (focus 1)
PARTNER_WEIGHTS = {"category": 1.0, "referred_customer": 0.75, "focus": 0.25}


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    provider_id: str
    vector: np.ndarray  # L2-normalized profile embedding
    categories: frozenset[str]
    capacity: int
    load: int  # tasks in hand plus open offers
    accepting_work: bool
    hourly_rate: Decimal | None = None
    recent_offers: int = 0  # offers received over the last few days
    rating_sum: int = 0  # stars received from customers, summed
    rating_count: int = 0
    rate_currency: str | None = None  # ISO 4217 code of hourly_rate


def rating_component(stars_sum: float, count: int) -> float:
    """0..1 from customers' stars, shrunk towards the prior (see RATING_PRIOR)."""
    mean = (stars_sum + RATING_PRIOR * RATING_PRIOR_WEIGHT) / (count + RATING_PRIOR_WEIGHT)
    return round((mean - 1.0) / 4.0, 4)


@dataclass(frozen=True, slots=True)
class Candidate:
    provider_id: str
    score: float
    components: dict[str, float]


class ProviderIndex:
    def __init__(self, providers: Iterable[ProviderRecord], dim: int | None = None) -> None:
        records = list(providers)
        self.ids = [p.provider_id for p in records]
        self.row_of = {pid: i for i, pid in enumerate(self.ids)}
        width = dim or (len(records[0].vector) if records else 0)
        self.vectors = (np.stack([np.asarray(p.vector, dtype=np.float32) for p in records]) if records
                        else np.zeros((0, width), dtype=np.float32))
        self.capacity = np.array([p.capacity for p in records], dtype=np.int32)
        self.load = np.array([p.load for p in records], dtype=np.int32)
        self.accepting = np.array([p.accepting_work for p in records], dtype=bool)
        self.recent_offers = np.array([p.recent_offers for p in records], dtype=np.float32)
        self.rating = np.array([rating_component(p.rating_sum, p.rating_count) for p in records], dtype=np.float32)
        self.rate = np.array([float(p.hourly_rate) if p.hourly_rate is not None else np.nan for p in records],
                             dtype=np.float64)
        # currencies as small codes (a rate is compared with a budget only in the same currency)
        self.currency_code: dict[str, int] = {}
        self.currency = np.array([self.currency_code.setdefault(p.rate_currency.upper(), len(self.currency_code))
                                  if p.rate_currency else -1 for p in records], dtype=np.int16)
        rows: dict[str, list[int]] = {}
        for i, p in enumerate(records):
            for slug in p.categories:
                rows.setdefault(slug, []).append(i)
        self.rows = {slug: np.array(r, dtype=np.int64) for slug, r in rows.items()}
        # The index is partitioned by category: each category's profile vectors are stored contiguously,
        # so a task only ever multiplies the rows of its own categories (no gather over a huge matrix).
        self.category_vectors = {slug: np.ascontiguousarray(self.vectors[r]) for slug, r in self.rows.items()}
        # Rows added by with_changes (numbered from len(vectors) on), and per category the vectors of those of its
        # rows: ``rows[slug]`` lists the category's rows in ``vectors`` first, then those in the tail.
        self.tail_vectors = np.zeros((0, width), dtype=np.float32)
        self.category_tail: dict[str, np.ndarray] = {}

    def vector(self, row: int) -> np.ndarray:
        """The profile vector of a row."""
        base = len(self.vectors)
        return self.vectors[row] if row < base else self.tail_vectors[row - base]

    def scores(self, task_vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row's profile with the task (rows in order)."""
        if not len(self.tail_vectors):
            return self.vectors @ task_vector
        if not len(self.vectors):
            return self.tail_vectors @ task_vector
        return np.concatenate([self.vectors @ task_vector, self.tail_vectors @ task_vector])

    def category_scores(self, slug: str, task_vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of the profiles of ``rows[slug]`` with the task (in that order)."""
        parts = [part @ task_vector for part in (self.category_vectors.get(slug), self.category_tail.get(slug))
                 if part is not None]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __len__(self) -> int:
        """The providers in it (rows left behind by :meth:`with_changes` not counted)."""
        return len(self.row_of)

    def record_offer(self, provider_id: str, offers: int = 1) -> None:
        """A provider was just offered tasks: more open offers against capacity and more recent offers, so
        the next task ranked on this index sees them as a fresh read of the database would."""
        row = self.row_of[provider_id]
        self.load[row] += offers
        self.recent_offers[row] += offers

    def with_counts(self, loads: dict[str, int], recent_offers: dict[str, int],
                    ratings: dict[str, tuple[int, int]]) -> ProviderIndex:
        """The same providers with new loads, recent offers and ratings (per provider id; absent: none): what
        changes between two reads of an unchanged set of profiles. Vectors, categories and rates are shared."""
        copy = object.__new__(ProviderIndex)
        copy.__dict__.update(self.__dict__)
        copy.load = np.array([loads.get(pid, 0) for pid in self.ids], dtype=np.int32)
        copy.recent_offers = np.array([recent_offers.get(pid, 0) for pid in self.ids], dtype=np.float32)
        copy.rating = np.full(len(self.ids), rating_component(0, 0), dtype=np.float32)
        for pid, (stars, count) in ratings.items():
            if (row := self.row_of.get(pid)) is not None:
                copy.rating[row] = rating_component(stars, count)
        return copy

    def with_changes(self, changed: Iterable[ProviderRecord], removed: Iterable[str] = ()) -> ProviderIndex:
        """The index with ``changed`` providers put in (replacing a provider of the same id, or joining) and the
        ``removed`` ids taken out: it ranks as an index built from the resulting providers would. This one is
        not changed.

        Built with no work per provider in it: a changed or removed provider's row is kept but closed (not
        accepting work, no capacity, not in ``row_of``; left in its categories, where ranking passes over it),
        and a changed provider takes a new row in the tail (``tail_vectors``, ``category_tail``: the rows
        added since the index was built, copied again on each change), so no other row moves and the vectors
        of the rows built with it are shared, not copied. Closed rows and the tail go at the next full build;
        the per-row counts (loads, capacity, rates) are copied: 100,000 providers are ~3 MB of them."""
        latest = {p.provider_id: p for p in changed}
        gone = {pid for pid in removed if pid in self.row_of} - latest.keys()
        if not latest and not gone:
            return self
        closing = np.array([self.row_of[pid] for pid in (gone | (latest.keys() & self.row_of.keys()))],
                           dtype=np.int64)
        joining = list(latest.values())
        first = len(self.ids)
        copy = object.__new__(ProviderIndex)
        copy.__dict__.update(self.__dict__)
        copy.ids = self.ids + [p.provider_id for p in joining]
        copy.row_of = {pid: row for pid, row in self.row_of.items() if pid not in gone}
        copy.row_of.update((p.provider_id, first + i) for i, p in enumerate(joining))
        copy.currency_code = dict(self.currency_code)

        def grown(column: np.ndarray, values: list[object], closed: object) -> np.ndarray:
            out = np.concatenate([column, np.array(values, dtype=column.dtype)]) if values else column.copy()
            out[closing] = closed
            return out

        added = np.stack([np.asarray(p.vector, dtype=np.float32) for p in joining]) if joining else None
        if added is not None:
            copy.tail_vectors = np.concatenate([self.tail_vectors, added]) if len(self.tail_vectors) else added
        copy.capacity = grown(self.capacity, [p.capacity for p in joining], 0)
        copy.load = grown(self.load, [p.load for p in joining], 0)
        copy.accepting = grown(self.accepting, [p.accepting_work for p in joining], False)
        copy.recent_offers = grown(self.recent_offers, [p.recent_offers for p in joining], 0)
        copy.rating = grown(self.rating, [rating_component(p.rating_sum, p.rating_count) for p in joining], 0)
        copy.rate = grown(self.rate, [float(p.hourly_rate) if p.hourly_rate is not None else np.nan
                                      for p in joining], np.nan)
        copy.currency = grown(self.currency, [
            copy.currency_code.setdefault(p.rate_currency.upper(), len(copy.currency_code)) if p.rate_currency
            else -1 for p in joining], -1)
        joined: dict[str, list[int]] = {}
        for i, p in enumerate(joining):
            for slug in p.categories:
                joined.setdefault(slug, []).append(i)
        copy.rows, copy.category_tail = dict(self.rows), dict(self.category_tail)
        for slug, new in joined.items():
            vectors = added[new]  # type: ignore[index]
            rows = np.array(new, dtype=np.int64) + first
            copy.rows[slug] = np.concatenate([self.rows[slug], rows]) if slug in self.rows else rows
            copy.category_tail[slug] = np.concatenate([self.category_tail[slug], vectors]) \
                if slug in self.category_tail else vectors
        return copy

    def working_copy(self) -> ProviderIndex:
        """A copy whose loads and recent offers can be changed (:meth:`record_offer`) without changing this
        index; everything else (vectors, categories, rates, ratings) is shared and never changed."""
        copy = object.__new__(ProviderIndex)
        copy.__dict__.update(self.__dict__)
        copy.load, copy.recent_offers = self.load.copy(), self.recent_offers.copy()
        return copy


@dataclass(frozen=True, slots=True)
class PartnerRecord:
    partner_id: str
    expertise: frozenset[str]  # the category slugs the partner assists with (any iterable; kept as a set)
    turn: tuple[int, str] = field(init=False)  # the partner's place among equals (Matcher.suggest_partners)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expertise", frozenset(self.expertise))
        object.__setattr__(self, "turn", (_stable_hash(self.partner_id), self.partner_id))


@dataclass(frozen=True, slots=True)
class PartnerCandidate:
    partner_id: str
    score: float
    components: dict[str, float]


def _stable_hash(value: str) -> int:
    """The same in every process (Python's hash() of a str is not)."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


def _partner_score(p: PartnerRecord, categories: Sequence[str], referrer: str | None) -> PartnerCandidate | None:
    """``p`` scored for a task in ``categories`` (primary first); None when they assist with none of them."""
    if not p.expertise:
        return None
    primary = categories[0]
    covered = len(p.expertise.intersection(categories))
    category = 1.0 if primary in p.expertise else SECONDARY_CATEGORY if covered else 0.0
    if not category:
        return None
    referred = 1.0 if referrer is not None and p.partner_id == referrer else 0.0
    focus = round(min(1.0, FOCUSED_CATEGORIES * covered / len(p.expertise)), 4)
    w = PARTNER_WEIGHTS
    score = round(w["category"] * category + w["referred_customer"] * referred + w["focus"] * focus, 4)
    return PartnerCandidate(p.partner_id, score, {"category": category, "referred_customer": referred, "focus": focus})


def _take_turns(group: Sequence[Any], key: str, k: int) -> list[Any]:
    """``k`` of ``group`` (equals, in their fixed order), starting at a place drawn from ``key``: each is first
    for about as many keys as any other."""
    if not group:
        return []
    start = _stable_hash(key) % len(group)
    return [group[(start + i) % len(group)] for i in range(min(k, len(group)))]


class PartnerPool:
    """The active partners (a routing worker keeps one between batches), grouped by category, for :meth:`Matcher.suggest_partners`
    on each of its tasks: a task in one category takes its partners tier by tier (equal scores), scoring only
    the referrer, instead of scoring every partner of the category (1,200 partners of a category cost 4 ms a
    task that way); a task in several categories is scored in full over their partners."""

    def __init__(self, partners: Iterable[PartnerRecord]) -> None:
        self.by_id: dict[str, PartnerRecord] = {}
        self.by_category: dict[str, list[PartnerRecord]] = {}
        for p in partners:
            self.by_id[p.partner_id] = p
            for slug in p.expertise:
                self.by_category.setdefault(slug, []).append(p)
        self._tiers: dict[str, list[tuple[float, list[PartnerRecord]]]] = {}

    def suggest(self, categories: Sequence[str], *, referrer: str | None = None, key: str = "",
                limit: int = MAX_SUGGESTED_PARTNERS) -> list[PartnerCandidate]:
        """What :meth:`Matcher.suggest_partners` gives over every partner of the pool."""
        if limit <= 0 or not categories:
            return []
        if len(set(categories)) > 1:
            covering = {p.partner_id: p for slug in categories for p in self.by_category.get(slug, ())}
            return Matcher.suggest_partners(covering.values(), categories, referrer=referrer, key=key, limit=limit)
        slug = categories[0]
        out: list[PartnerCandidate] = []
        ref = self.by_id.get(referrer) if referrer is not None else None
        ref_tier = None  # the tier the referrer would be in, had they not referred the customer
        if ref is not None and (first := _partner_score(ref, categories, referrer)) is not None:
            out.append(first)  # the referrer's score is above every tier (PARTNER_WEIGHTS)
            ref_tier = _partner_score(ref, categories, None).score  # type: ignore[union-attr]
        for score, group in self._category_tiers(slug):
            if len(out) >= limit:
                break
            if score == ref_tier:
                group = [p for p in group if p is not ref]
            out += [_partner_score(p, categories, None) for p in _take_turns(group, key, limit - len(out))]  # type: ignore[misc]
        return out

    def _category_tiers(self, slug: str) -> list[tuple[float, list[PartnerRecord]]]:
        """The partners of ``slug`` grouped by their score for a task in it alone, best first, each group in its
        fixed order (built once per pool and category). That score depends only on how many categories a
        partner declared."""
        if slug not in self._tiers:
            by_count: dict[int, list[PartnerRecord]] = {}
            for p in self.by_category.get(slug, ()):
                by_count.setdefault(len(p.expertise), []).append(p)
            tiers: dict[float, list[PartnerRecord]] = {}
            for group in by_count.values():
                tiers.setdefault(_partner_score(group[0], [slug], None).score, []).extend(group)  # type: ignore[union-attr]
            self._tiers[slug] = [(score, sorted(tiers[score], key=lambda p: p.turn))
                                 for score in sorted(tiers, reverse=True)]
        return self._tiers[slug]


class Matcher:
    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = weights or WEIGHTS

    def rank(self, task_vector: np.ndarray | None, categories: list[str], providers: list[ProviderRecord],
             budget: Decimal | None = None, exclude: set[str] | None = None,
             limit: int | None = None, require_category: bool = True, include_full: bool = False,
             budget_currency: str | None = None) -> list[Candidate]:
        """Eligible providers (accepting work, spare capacity, not excluded), best first."""
        return self.rank_index(ProviderIndex(providers), task_vector, categories, budget, exclude, limit,
                               require_category, include_full, budget_currency)

    def rank_index(self, index: ProviderIndex, task_vector: np.ndarray | None, categories: list[str],
                   budget: Decimal | None = None, exclude: set[str] | None = None, limit: int | None = None,
                   require_category: bool = True, include_full: bool = False,
                   budget_currency: str | None = None) -> list[Candidate]:
        """Rank the providers of an index.

        With ``require_category`` (the default) only providers who declared one of the task's categories
        are candidates: a good semantic match from another trade is not someone the customer asked for.
        Without a task vector (the customer objected to AI processing) semantic fit counts as 0.
        ``include_full``: providers with no spare capacity now are ranked too, behind every provider who has
        some (availability 0), so that a task can be re-offered to them once they have room.
        ``budget_currency``: the budget's currency; a rate in another currency (or in none) is not compared
        with it (price fit unknown, 0.5). Without it every rate is taken to be in the budget's currency.
        """
        if len(index) == 0 or limit == 0:
            return []
        n = len(index.ids)  # rows, closed ones (ProviderIndex.with_changes) included
        primary, secondary = (categories[0], categories[1:]) if categories else (None, [])
        known = [s for s in categories if s in index.rows]
        semantic_all = np.zeros(n, dtype=np.float32)
        category_all = np.zeros(n, dtype=np.float32)
        selected = np.zeros(n, dtype=bool)
        for slug in known:
            rows_c = index.rows[slug]
            selected[rows_c] = True
            if task_vector is not None:
                semantic_all[rows_c] = index.category_scores(slug, np.asarray(task_vector, dtype=np.float32))
        for slug in secondary:
            if slug in index.rows:
                category_all[index.rows[slug]] = SECONDARY_CATEGORY
        if primary in index.rows:
            category_all[index.rows[primary]] = 1.0
        if require_category and categories:
            rows = np.flatnonzero(selected)
        else:
            rows = np.arange(n)
            if task_vector is not None:
                semantic_all = index.scores(np.asarray(task_vector, dtype=np.float32))
        if exclude:
            keep = np.ones(n, dtype=bool)
            keep[[index.row_of[pid] for pid in exclude if pid in index.row_of]] = False
            rows = rows[keep[rows]]
        rows = rows[index.accepting[rows] & (index.capacity[rows] > 0)]
        full = index.load[rows] >= index.capacity[rows]
        if not include_full:
            rows, full = rows[~full], full[~full]
        if rows.size == 0:
            return []
        semantic = np.maximum(semantic_all[rows], 0.0)
        category = category_all[rows]
        availability = np.maximum(1 - index.load[rows] / index.capacity[rows], 0.0)
        rate = index.rate[rows]
        if budget is not None and budget_currency is not None:  # another currency's rate: not comparable
            same = index.currency[rows] == index.currency_code.get(budget_currency.upper(), -2)
            rate = np.where(same, rate, np.nan)
        price = self._price_fit(rate, budget)
        rating = index.rating[rows]
        recent = index.recent_offers[rows]
        fairness = HALF_EXPOSURE / (HALF_EXPOSURE + recent)
        # shares among the providers who can take the task now (full ones, ranked behind them, change nothing)
        offers, open_rows = float(recent[~full].sum()), int((~full).sum())
        # a full provider's share is the one they would have among them (their own offers added to the total)
        among = np.where(full, offers + recent, offers)
        share = np.divide(recent, among, out=np.zeros(rows.size, dtype=np.float64), where=among > 0)
        cap = max(MAX_SHARE, SHARE_CAP_FACTOR / max(open_rows, 1))
        capped = (share > cap) & (offers >= MIN_OFFERS_FOR_CAP) & (open_rows > 1)
        # the score is the weighted sum of the components as shown (rounded), so anyone can recompute it
        semantic, category, availability, price, rating, fairness = (
            np.round(c.astype(np.float64), 4) for c in (semantic, category, availability, price, rating, fairness))
        w = self.weights
        total = (w["semantic"] * semantic + w["category"] * category + w["availability"] * availability
                 + w["price"] * price + w.get("rating", 0.0) * rating + w["fairness"] * fairness)
        total = np.round(total, 4)
        k = rows.size if limit is None else min(limit, rows.size)
        # best first, providers over the share cap last; ties broken by provider id so the order never depends
        # on insertion order
        order_key = total - 10.0 * capped - 20.0 * full
        if k < rows.size:  # every row at or above the k-th best key: the id decides among those tied at the cut
            top = np.flatnonzero(order_key >= -np.partition(-order_key, k - 1)[k - 1])
        else:
            top = np.arange(rows.size)
        top = sorted(top, key=lambda i: (bool(full[i]), bool(capped[i]), -total[i], index.ids[rows[i]]))[:k]
        return [
            Candidate(index.ids[rows[i]], float(total[i]), {
                "semantic": round(float(semantic[i]), 4), "category": round(float(category[i]), 4),
                "availability": round(float(availability[i]), 4), "price": round(float(price[i]), 4),
                "rating": round(float(rating[i]), 4),
                "fairness": round(float(fairness[i]), 4), "recent_share": round(float(share[i]), 4),
                "over_share_cap": float(capped[i]),
            })
            for i in top
        ]

    @staticmethod
    def suggest_partners(partners: Iterable[PartnerRecord], categories: Sequence[str], *,
                         referrer: str | None = None, key: str = "", exclude: set[str] | None = None,
                         limit: int = MAX_SUGGESTED_PARTNERS) -> list[PartnerCandidate]:
        """Assisting partners for a task in ``categories`` (primary first), best first: only those whose expertise
        covers one of them. Components (PARTNER_WEIGHTS), each 0..1:

        * ``category``: 1 when the partner assists with the primary category, SECONDARY_CATEGORY with a
          secondary one only;
        * ``referred_customer``: 1 for ``referrer``, the partner who referred the task's customer (they know
          the customer already);
        * ``focus``: 1 for a partner of up to FOCUSED_CATEGORIES categories (or as many of the task's), less
          the more categories they declared beyond that, so a partner who ticked every category does not
          crowd out those who assist with a few, nor is declaring a single one an advantage.

        Partners with the same score take turns across tasks (``key``: the task): ordered by a hash of their id
        and taken from a place in that order drawn from ``key``, so a task's order is the same every time.
        :class:`PartnerPool` gives the same result for many tasks without scoring every partner each time."""
        if limit <= 0 or not categories:
            return []
        exclude = exclude or set()
        tiers: dict[float, list[tuple[PartnerRecord, PartnerCandidate]]] = {}
        for p in partners:
            if p.partner_id not in exclude and (candidate := _partner_score(p, categories, referrer)) is not None:
                tiers.setdefault(candidate.score, []).append((p, candidate))
        out: list[PartnerCandidate] = []
        for score in sorted(tiers, reverse=True):
            if len(out) >= limit:
                break
            group = sorted(tiers[score], key=lambda pc: pc[0].turn)
            out += [c for _, c in _take_turns(group, key, limit - len(out))]
        return out

    @staticmethod
    def _price_fit(rate: np.ndarray, budget: Decimal | None) -> np.ndarray:
        """1.0 when ten hours at the provider's rate fit in the budget, falling off as they don't; 0.5 unknown.
        A rate of 0 (work done for free) fits any budget."""
        out = np.full(rate.shape, 0.5)
        if budget is None:
            return out
        known = ~np.isnan(rate)
        cost = rate[known] * 10
        paid = cost > 0
        out[known] = np.where(paid, np.clip(float(budget) / np.where(paid, cost, 1.0), 0.0, 1.0), 1.0)
        return np.round(out, 4)
