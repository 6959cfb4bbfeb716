"""The routing engine of one worker process: encoder, a router fitted per taxonomy version, provider vectors.

It holds the in-memory provider index described in DESIGN.md: one snapshot of the providers open for work
(vectors, loads, ratings, recent offers) shared by the process's routing batches, and profile vectors cached
by profile ``updated_at``, so an edited profile is re-embedded on the next decision and nothing else is.

One encoder pass per task: a task's vector decides its category and ranks the providers, so profiles are
embedded by the encoder of the routing model in use (its *space*). With a tuned model that is the tuned encoder,
whose top layers were trained on the taxonomy; the shared encoder's profile vectors are kept as well, for the
frozen model the next taxonomy version starts with. A newly fitted tuned model takes over once every open
profile has a vector in its space (a few hundred more per call of :meth:`RoutingEngine.router`, so that at
100,000 providers no routing batch and no category suggestion waits for them all).
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import structlog
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from marketplace.clock import now
from marketplace.db.models import Account, CategoryExample, Offer, ProviderProfile, Rating
from marketplace.domain.categories.services import load_taxonomy, taxonomy_mark
from marketplace.domain.partners.services import active_partners, partners_mark
from marketplace.domain.providers.services import profile_text
from marketplace.domain.routing.recent import RecentItems, cached_recently
from marketplace.errors import Conflict
from models import Encoder, load_encoder
from models.tuning import TuningConfig
from routing import Matcher, ProviderRecord, Taxonomy, scrub_pii
from routing.matcher import PartnerPool, PartnerRecord, ProviderIndex
from routing.tuned import RoutingModel, fingerprint, fit_routing_model, tunable

log = structlog.get_logger(__name__)
T = TypeVar("T")


# Offers received in this window count towards a provider's share (routing.matcher: fairness).
FAIRNESS_WINDOW = timedelta(days=7)
# Vectors of this many recently encoded task texts stay in memory (Engine.encode): a worker's encode stage
# runs at most a quarter of this ahead of its write stage (workers.actors.ENCODE_AHEAD). None of them (nor
# any text) stays longer than RECENT_SECONDS: a worker's encode stage hands them to its write stage within
# seconds, and a customer's words should not outlive that in a long-running process.
RECENT_TEXTS = 2048
RECENT_SECONDS = 60.0
# The provider snapshot (RoutingEngine.provider_index) is read again after this many seconds: what other
# processes changed meanwhile (their offers, offers accepted, declined or expired) counts from then on.
PROVIDER_SNAPSHOT_AGE = 5.0
# A new snapshot reads the counts (loads, recent offers, ratings) and only the profiles changed since the last
# one (RoutingEngine._profile_changes); every profile is read again at least this often all the same: a provider who
# leaves as another joins, or a profile deleted, leaves the number of open profiles as it was.
PROVIDER_PROFILES_AGE = 60.0
# The changed profiles are looked for from this much before the newest ``updated_at`` the last snapshot saw: a
# change committed that long after it was stamped (a slow transaction, a host whose clock is a little behind)
# is still found. Those found again unchanged cost their id and ``updated_at`` read and compared.
PROFILE_CHANGE_LAG = timedelta(seconds=10)
# More changed profiles than this share of the snapshot (a bulk import): every profile is read instead.
PATCH_SHARE = 0.25
# A worker's upkeep thread (RoutingEngine.refresh_ahead) reads it again this much sooner, while routing batches use
# it, so that they find it fresh and never wait for the read (3.7 s at 100,000 providers on Zen 4, bench.snapshot).
SNAPSHOT_AHEAD = 1.5
# The taxonomy is read again when its mark (categories.services.taxonomy_mark) moves, and at least this often
# (should two deletions and two additions ever leave the mark as it was).
TAXONOMY_AGE = 60.0
# The active partners (assisting-partner suggestions) are read again when their mark
# (partners.services.partners_mark) moves, and at least this often: an account reopened by hand moves no mark.
# (One closed moves none either: a batch looks up the accounts of the partners it suggests, and reads the partners
# again when one was closed, routing.services._suggest_partners.)
PARTNERS_AGE = 60.0
# Profiles embedded in a new tuned model's space per call of RoutingEngine.router (one per routing batch) until
# all have a vector there and the model takes over: ~1.6 s of the two cores a call on Zen 4 (a profile is ~71
# tokens, ~310 a second), and a demo-sized marketplace switches on the first call.
WARM_PROFILES = 512


@cached_recently(RECENT_TEXTS, RECENT_SECONDS)
def task_text(title: str, description: str) -> str:
    """What the models see of a task (contact details removed). Cached briefly: a routing batch asks for each
    of its tasks' texts several times, and the regular expressions cost more than the rest of the lookup."""
    return scrub_pii(f"{title}. {description}")


class NoTaxonomy(RuntimeError):
    """There is no category with examples to route to (the taxonomy is not loaded)."""


class ModelReplaced(Conflict):
    """The routing model a batch fetched was replaced (a new taxonomy version) before it ranked providers:
    routing again uses the current one."""


@dataclass(frozen=True, slots=True)
class _ProviderSnapshot:
    index: ProviderIndex
    mark: tuple[Any, ...]  # (database, newest profile change, newest rating) when it was read
    taken: float  # time.monotonic() when its reading began
    session: int  # id() of the session it was read in: that transaction's own offers are in it
    space: str  # model_id of the encoder its vectors come from
    profiles_read: float  # time.monotonic() when every profile was last read (not only the changed ones)
    updated: dict[uuid.UUID, datetime]  # the profile ``updated_at`` each provider in it was read with


# session.info key: the offers a session's routing made, not yet committed, as (time.monotonic(), per provider)
_UNCOMMITTED = "relay_uncommitted_offers"


def _when_transaction_ends(session: Session, name: str, fn: Callable[[Session], object]) -> None:
    """Call ``fn(session)`` once, on the ``name`` event ("after_commit" or "after_rollback") of ``session``'s
    outermost transaction. SQLAlchemy sends those events at the end of a savepoint too (a routing batch opens
    one, routing.services), when nothing has been committed or rolled back yet."""
    done = False

    def handler(s: Session) -> None:
        nonlocal done
        if not done and not s.in_nested_transaction():
            done = True
            fn(s)

    event.listen(session, name, handler)


@dataclass(frozen=True, slots=True)
class RefitPlan:
    taxonomy_version: str
    labels: list[str]
    texts: list[str]
    quotable: list[str]
    path: Path


def _newer_profiles(have: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    """Whether a snapshot of mark ``have`` holds every profile change of mark ``want`` (same database, its
    newest profile change as new or newer)."""
    if have[0] != want[0]:
        return False
    if have[1] is None or want[1] is None:
        return have[1] == want[1]
    return bool(have[1] >= want[1])


class RoutingEngine:
    """Per process. Decisions use the best routing model available for the current taxonomy version:

    - a tuned model (top encoder layers fine-tuned on the taxonomy, routing.tuned) once one has been fitted
      and saved under ``<model cache>/routers/<fingerprint>.npz``: every process loads it from there;
    - until then a frozen model (head over the shared encoder's vectors), fitted here in seconds.

    Tuned models are fitted by the ``refit_router`` job (the scheduler asks for one when the current taxonomy
    has none), never on the routing path: a taxonomy change must not stall routing for minutes.
    """

    def __init__(self, encoder: Encoder | None = None, cache: Path | None = None,
                 tuning: TuningConfig | None = None) -> None:
        self._encoder = encoder
        self._cache = cache
        self.tuning = tuning or TuningConfig()
        self._lock = threading.Lock()
        self._fit_lock = threading.Lock()
        self._unloadable: Path | None = None  # a tuned model file this process failed to build a model from
        self._model: RoutingModel | None = None
        self._taxonomy: Taxonomy | None = None
        # a tuned model loaded (from this file) for the current taxonomy while its space fills with profile vectors
        self._waiting: RoutingModel | None = None
        self._waiting_file: Path | None = None
        # (taxonomy version, its tuned model's file): hashing every example once per version, not per call
        self._tuned_file_of: tuple[str, Path] | None = None
        # what _kept read, by name ("taxonomy", "partners"): (its mark, time.monotonic() when the read began, it)
        self._kept_reads: dict[str, tuple[tuple[object, ...], float, Any]] = {}
        # per space (encoder model_id): provider -> (profile updated_at, vector)
        self._spaces: dict[str, dict[uuid.UUID, tuple[datetime, np.ndarray]]] = {}
        self._spaces_lock = threading.Lock()
        self._recent: RecentItems[tuple[str, str], np.ndarray] = RecentItems(RECENT_TEXTS, RECENT_SECONDS)
        self._providers: _ProviderSnapshot | None = None
        self._providers_lock = threading.Lock()
        # One thread at a time reads the providers into a new snapshot, outside _providers_lock: the others go
        # on with the snapshot they have meanwhile (when only its age is up). While the upkeep thread watches,
        # a batch after a profile change puts only the changed profiles into the snapshot it has, one such batch
        # at a time (_patching), without waiting for a read under way. Offers committed during a read or a patch
        # are kept (one list per read or patch under way, _collecting) and counted in the new snapshot when it is
        # put in place.
        self._building = threading.Lock()
        self._patching = threading.Lock()
        self._collecting: list[list[Counter[str]]] = []
        self._index_used = -np.inf  # time.monotonic() of the last provider_index call
        # time.monotonic() when a running upkeep thread last looked for provider changes (refresh_ahead, watching)
        self._watched = -np.inf
        # time.monotonic() when that thread began the read under way, if one is (None: none)
        self._upkeep_reading: float | None = None
        # One thread at a time embeds profiles for a tuned model waiting to take over (router, warm_up).
        self._warm_lock = threading.Lock()
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

    @property
    def cache(self) -> Path:
        if self._cache is None:
            from models.onnx_backend import cache_dir

            self._cache = cache_dir() / "routers"
        return self._cache

    def _examples(self, session: Session, taxonomy: Taxonomy) -> tuple[list[str], list[str], list[str]]:
        if not taxonomy.categories:
            raise NoTaxonomy("no categories with examples: load the taxonomy (relay seed)")
        labels = [c.slug for c in taxonomy.categories for _ in c.examples]
        texts = [e for c in taxonomy.categories for e in c.examples]
        # Decisions quote the nearest examples to customers: only our seed examples may be quoted,
        # never ones learned from other customers' tasks.
        shareable = set(session.scalars(select(CategoryExample.text).where(CategoryExample.source == "seed")))
        return labels, texts, [t if t in shareable else "" for t in texts]

    def tuned_path(self, labels: list[str], texts: list[str]) -> Path:
        return self.cache / f"{fingerprint(labels, texts, self.encoder, True, self.tuning)}.npz"

    def _tuned_file(self, session: Session, taxonomy: Taxonomy) -> Path:
        """Where the tuned model of this taxonomy version is (or will be) saved."""
        known = self._tuned_file_of
        if known is None or known[0] != taxonomy.version:
            labels, texts, _ = self._examples(session, taxonomy)
            known = self._tuned_file_of = (taxonomy.version, self.tuned_path(labels, texts))
        return known[1]

    def _load_tuned(self, path: Path) -> RoutingModel | None:
        # The file holds the quotable texts it was fitted with (seed examples only); the fingerprint in its
        # name covers every example, so they are this taxonomy's.
        if path == self._unloadable:
            return None
        try:
            return RoutingModel.load(path, self.encoder)
        except (zipfile.BadZipFile, EOFError, KeyError, ValueError):
            # unreadable (a truncated write, another format): removed, the refit job writes it anew
            log.warning("routing.tuned_model_unreadable", path=str(path), exc_info=True)
            path.unlink(missing_ok=True)
            return None
        except Exception:
            # The file is fine but this process could not build the model from it (out of memory, say): other
            # processes may well load it, and a refit takes minutes, so it stays; this process routes with
            # the frozen model and does not try again for this file.
            log.error("routing.tuned_model_load_failed", path=str(path), exc_info=True)
            self._unloadable = path
            return None

    def latest_model(self) -> RoutingModel | None:
        """The model the last decision used, without reading the taxonomy (which may have changed since):
        for work done ahead of a decision that only saves time when it guesses right."""
        with self._lock:
            return self._model

    def taxonomy(self, session: Session) -> Taxonomy:
        """The current taxonomy. Read afresh only when its mark moved (or every TAXONOMY_AGE seconds): every
        routing batch and category suggestion asks, and a taxonomy grows with every example staff feedback
        adds; at 15,000 examples reading them all cost more than routing a batch."""
        # read before the taxonomy: a change in between makes the next call read it again
        mark = (session.get_bind().engine.url, *taxonomy_mark(session))
        return self._kept("taxonomy", mark, TAXONOMY_AGE, lambda: load_taxonomy(session))

    def partners(self, session: Session, fresh: bool = False) -> PartnerPool:
        """The active partners, grouped for assisting-partner suggestions. Read afresh only when their mark moved
        (or every PARTNERS_AGE seconds), or with ``fresh`` (a partner account found closed: it moves no mark):
        every routing batch asks, and reading and grouping every partner took a batch ~0.5 s at 20,000 partners
        (bench.partners). The pool is shared by the batches that follow and not changed in place (suggesting
        fills its per-category tiers, the same whichever thread fills them)."""
        mark = (session.get_bind().engine.url, *partners_mark(session))  # read first, as in taxonomy()
        return self._kept("partners", mark, PARTNERS_AGE, lambda: PartnerPool(
            PartnerRecord(str(pid), expertise) for pid, expertise in active_partners(session)), fresh=fresh)

    def _kept(self, name: str, mark: tuple[object, ...], age: float, read: Callable[[], T], fresh: bool = False) -> T:
        """What ``read()`` gives, kept under ``name`` until ``mark`` (read by the caller before) moves or ``age``
        seconds pass since that read began; read again at once with ``fresh``."""
        with self._lock:
            known = self._kept_reads.get(name)
        if not fresh and known is not None and known[0] == mark and time.monotonic() - known[1] < age:
            return known[2]  # type: ignore[no-any-return]
        started = time.monotonic()
        value = read()
        with self._lock:
            self._kept_reads[name] = (mark, started, value)
        return value

    def router(self, session: Session, tuning: bool = True, ranking: bool = True, *, wait: bool = False
               ) -> tuple[RoutingModel, Taxonomy]:
        """The routing model for the current taxonomy version (and that taxonomy).

        A tuned model newly found for it takes over once every open profile has a vector in its space (some
        more on each call, WARM_PROFILES, embedded without holding the engine's lock, by one thread at a time:
        a call that finds another embedding goes on with the model in use, unless ``wait``); until then the
        frozen model decides. ``ranking=False``: the caller only decides categories (the API's category
        suggestions), and gets the tuned model as soon as it is loaded; nothing is embedded for it."""
        taxonomy = self.taxonomy(session)
        with self._lock:
            current = self._model is not None and self._taxonomy is not None \
                and self._taxonomy.version == taxonomy.version
            if current:
                # The same version (slugs and examples) may come with new names and descriptions: decisions
                # and suggestions name categories as they are now.
                self._taxonomy = taxonomy
            if current and (self._model.tuned or not tuning):  # type: ignore[union-attr]
                return self._model, taxonomy  # type: ignore[return-value]
            waiting = self._waiting_model(session, taxonomy) if tuning else None
        if waiting is not None:
            if not ranking:
                return waiting, taxonomy
            self._warm(session, waiting, taxonomy, wait)
        with self._lock:
            if self._model is waiting is not None:  # in use now (here or in another thread)
                return waiting, taxonomy  # type: ignore[return-value]
            if self._model is None or self._taxonomy is None or self._taxonomy.version != taxonomy.version:
                labels, texts, quotable = self._examples(session, taxonomy)
                self._model = fit_routing_model(labels, texts, self.encoder, quotable, tune=False)
                self._taxonomy = taxonomy
                self._keep_spaces()
                log.info("routing.model_fitted", tuned=False, taxonomy_version=taxonomy.version,
                         seconds=round(self._model.fit_seconds, 2))
            return self._model, self._taxonomy

    def _warm(self, session: Session, waiting: RoutingModel, taxonomy: Taxonomy, wait: bool) -> None:
        """Embed WARM_PROFILES more open profiles in ``waiting``'s space, and put it in use once none is left."""
        if not self._warm_lock.acquire(blocking=wait):
            return  # another thread is embedding the same profiles
        try:
            filled = self._fill_space(session, waiting.encoder, WARM_PROFILES)[0]
        except ModelReplaced:  # another thread found a newer taxonomy meanwhile
            filled = False
        finally:
            self._warm_lock.release()
        if filled:
            with self._lock:
                if self._waiting is waiting:
                    log.info("routing.model_in_use", tuned=True, taxonomy_version=taxonomy.version)
                    self._model, self._taxonomy, self._waiting = waiting, taxonomy, None
                    self._keep_spaces()

    def warm_up(self, session: Session, tuning: bool = True) -> bool:
        """Between routing batches (a worker's upkeep thread, workers.upkeep): the routing model of the current
        taxonomy (the frozen one fitted, a tuned one loaded once it is saved) and WARM_PROFILES more profiles
        embedded in a waiting tuned model's space, so that it takes over even when no task comes (otherwise
        the next routing batch does it, a batch for each WARM_PROFILES providers). Returns whether a tuned
        model is still waiting for profile vectors (call again at once)."""
        self.router(session, tuning, wait=True)
        with self._lock:
            return tuning and self._waiting is not None

    def refresh_ahead(self, session: Session, *, watching: bool = False) -> float:
        """Between routing batches (workers.upkeep): read the provider snapshot again SNAPSHOT_AHEAD seconds
        before its age is up, or when a profile or rating changed, while routing batches have used it in the
        last 2 x PROVIDER_SNAPSHOT_AGE seconds, so that they take a copy of it without waiting for a read.
        Returns the seconds until it is due again (infinity while batches do not use it).

        ``watching``: the caller (a running upkeep thread) calls again within PROVIDER_SNAPSHOT_AGE seconds,
        and until :meth:`stop_watching` batches leave reading the counts and ratings to it: they use the
        snapshot while its age allows, look only for the newest profile change (one index lookup) and read
        only the changed profiles, with their own providers' counts."""
        if time.monotonic() - self._index_used >= 2 * PROVIDER_SNAPSHOT_AGE:
            self._watched = -np.inf  # (the first batch after a quiet spell looks for changes itself)
            return float("inf")
        due = PROVIDER_SNAPSHOT_AGE - SNAPSHOT_AHEAD
        if not watching:
            snapshot = self._provider_snapshot(session, self.ranking_encoder(), max_age=due, watching=True)
        else:
            self._upkeep_reading = time.monotonic()  # batches go on looking only for profile changes meanwhile
            try:
                snapshot = self._provider_snapshot(session, self.ranking_encoder(), max_age=due, watching=True)
            finally:
                self._upkeep_reading = None
            self._watched = time.monotonic()  # (not after a read that failed)
        return max(0.0, snapshot.taken + due - time.monotonic())

    def stop_watching(self) -> None:
        """The upkeep thread stopped: routing batches look for changed profiles and ratings themselves again."""
        self._watched = -np.inf

    def _waiting_model(self, session: Session, taxonomy: Taxonomy) -> RoutingModel | None:
        """The tuned model saved for ``taxonomy``, loaded (once) and not yet in use; None without one (called
        with ``_lock`` held)."""
        path = self._tuned_file(session, taxonomy)
        if self._waiting_file != path:
            self._waiting = None  # loaded for an earlier taxonomy version
        if self._waiting is None and path.exists() and (loaded := self._load_tuned(path)) is not None:
            log.info("routing.model_loaded", tuned=True, taxonomy_version=taxonomy.version)
            self._waiting, self._waiting_file = loaded, path
        return self._waiting

    def ranking_encoder(self) -> Encoder:
        """The encoder whose vectors rank providers now: the routing model's (what :meth:`router` last
        returned), or the shared one before any model. A guess for work done ahead of a routing batch; the
        batch itself ranks in the space of the model it decides with."""
        model = self.latest_model()
        return self.encoder if model is None else model.encoder

    def _kept_spaces(self) -> set[str]:
        """The spaces whose profile vectors are kept: the shared encoder's, and those of the model in use and
        of a tuned model waiting to take over."""
        return {self.encoder.model_id} | {m.encoder.model_id for m in (self._model, self._waiting) if m}

    def _keep_spaces(self) -> None:
        """Drop the profile vectors of spaces no model here uses any more (called with ``_lock`` held)."""
        keep = self._kept_spaces()
        with self._spaces_lock:
            for space in self._spaces.keys() - keep:
                del self._spaces[space]

    def needs_tuning(self, session: Session) -> bool:
        """True when the current taxonomy has no saved tuned model and nobody here is fitting one."""
        return not self._fit_lock.locked() and self.refit_plan(session) is not None

    def refit_plan(self, session: Session) -> RefitPlan | None:
        """What a refit of the current taxonomy would fit, or None when there is nothing to do."""
        taxonomy = self.taxonomy(session)
        counts = [len(c.examples) for c in taxonomy.categories]
        if not tunable(counts) or self._tuned_file(session, taxonomy).exists():
            return None
        labels, texts, quotable = self._examples(session, taxonomy)
        return RefitPlan(taxonomy.version, labels, texts, quotable, self._tuned_file(session, taxonomy))

    def current_tuned_path(self, session: Session) -> Path:
        """Where the tuned model of the taxonomy as it is now is (or will be) saved."""
        return self._tuned_file(session, self.taxonomy(session))

    def refit(self, read_plan: Callable[[], RefitPlan | None],
              read_current: Callable[[], Path] | None = None) -> str:
        """Fit and save a tuned model for the current taxonomy. Minutes of CPU: run it in a job, with no
        transaction open. ``read_plan`` reads what to fit (``refit_plan`` in a session of its own);
        ``read_current``, called once the model is saved, where the model of the taxonomy as it is by then
        belongs (``current_tuned_path``; without it, the fitted model is taken to be current).

        One fit at a time: a fit of an earlier taxonomy version may be running (staff added an example
        meanwhile). This one waits for it instead of giving up (the scheduler, in another process, does not
        ask again for an hour once it has asked for a version), and only then reads its plan: the taxonomy
        as it is by then, so that a job that waited never fits, and keeps, an older version than the one
        just fitted."""
        with self._fit_lock:
            plan = read_plan()
            if plan is None or plan.path.exists():
                return "present"
            # Saved with only the seed examples' texts: no customer's task text is written to the file.
            model = fit_routing_model(plan.labels, plan.texts, self.encoder, plan.quotable, tune=True,
                                      config=self.tuning)
            model.save(plan.path)
            # Older models were fitted on examples that may since have been erased (learned examples live
            # as long as their task, or until their customer objects to AI processing): only the current
            # taxonomy's model is kept. Current as read now, not as planned: worker replicas share the cache,
            # so another process may have saved a newer taxonomy's model while this one fitted (it stays),
            # or an older one (it goes, as does this one if the taxonomy has moved on since).
            try:
                current = read_current() if read_current is not None else plan.path
            except Exception:  # the cache is left as it is: the next refit tidies it
                log.warning("routing.refit_cleanup_skipped", exc_info=True)
            else:
                for old in self.cache.glob("*.npz"):
                    if old != current:
                        old.unlink(missing_ok=True)
        log.info("routing.model_fitted", tuned=True, taxonomy_version=plan.taxonomy_version,
                 seconds=round(model.fit_seconds, 1), path=str(plan.path))
        return "fitted"

    def encode(self, encoder: Encoder, texts: list[str]) -> np.ndarray:
        """``encoder.encode(texts)``, remembering the last RECENT_TEXTS vectors for RECENT_SECONDS: a worker
        encodes the tasks of a batch before it opens the write transaction (workers.actors); the transaction
        finds them here."""
        out = np.empty((len(texts), encoder.dim), dtype=np.float32)
        missing: list[int] = []
        for i, text in enumerate(texts):
            hit = self._recent.get((encoder.model_id, text))
            if hit is None:
                missing.append(i)
            else:
                out[i] = hit
        if missing:
            fresh = encoder.encode([texts[i] for i in missing])
            for i, vector in zip(missing, fresh, strict=True):
                out[i] = vector
                self._recent.put((encoder.model_id, texts[i]), vector)
        return out

    def provider_index(self, session: Session, encoder: Encoder | None = None, fresh: bool = False,
                       recheck: Collection[uuid.UUID] = ()) -> ProviderIndex:
        """The providers open for work as routing ranks them, as a working copy: the caller records the offers
        it picks on it (``ProviderIndex.record_offer``) and reports those it makes with :meth:`count_offers`.
        Profile vectors are ``encoder``'s (default: the shared encoder's), to compare with task vectors from it.

        Copied from one snapshot per process, not read per routing batch: at 100,000 providers, or with
        millions of offers in the fairness window, reading them cost more than routing the batch. Offers made
        by this process are counted in it as their transactions commit; it is read again when a profile changed
        or a rating was added (the newest ``updated_at`` or ``created_at`` moved), when it is older than
        PROVIDER_SNAPSHOT_AGE seconds, and with ``fresh``. Until then other processes' offers and closed
        offers are not in it, so offers picked on it must be checked against the database under lock before
        they are written (``offers.services.overbooked``).

        While the upkeep thread watches (:meth:`refresh_ahead`), only the newest profile change is looked for:
        the profiles changed since are put in (with their providers' counts), the other counts and the ratings
        are the upkeep's. A profile change committed before the call is in the index in any case."""
        self._index_used = time.monotonic()
        snapshot = self._provider_snapshot(session, encoder or self.encoder, fresh, recheck=recheck)
        with self._providers_lock:  # another thread's commit updates its loads and recent offers in place
            index = snapshot.index.working_copy()
        for provider_id, n in self._missing_from(snapshot, session).items():  # this transaction's own
            if provider_id in index.row_of:  # (one who has stopped taking work since is not in it)
                index.record_offer(provider_id, n)
        return index

    def _provider_snapshot(self, session: Session, encoder: Encoder, fresh: bool = False,
                           max_age: float | None = None, watching: bool = False,
                           recheck: Collection[uuid.UUID] = ()) -> _ProviderSnapshot:
        """The snapshot in ``encoder``'s space, read again if a profile or rating changed since, if it is older
        than ``max_age`` (default PROVIDER_SNAPSHOT_AGE) or with ``fresh``. The reading happens outside
        _providers_lock, by one thread at a time; a thread that needs a new snapshot goes on with the one it
        has while another reads, unless a profile changed (then it waits for that read). While an upkeep thread
        watches for changes (:meth:`refresh_ahead`; not ``watching``, which is that thread's own call), a
        snapshot young enough is used with only the profiles changed since put in (:meth:`_patch`), even while
        a read is under way."""
        max_age = PROVIDER_SNAPSHOT_AGE if max_age is None else max_age
        asked = time.monotonic()
        url, space = session.get_bind().engine.url, encoder.model_id
        snapshot = self._providers
        # While an upkeep thread watches, a batch looks only for a changed profile (one index lookup): a provider
        # who joined or edited their profile a moment ago is ranked at once, the changed profiles read without
        # the counts; the counts, ratings and accounts deactivated are the upkeep's (within a round).
        # Its age may be up while the upkeep reads a new one (a read of every profile takes 3.5 s at 100,000
        # providers, and longer with more): batches go on with it meanwhile, as they do without the upkeep.
        reading = self._upkeep_reading
        upkeep_reading = reading is not None and asked - reading <= PROVIDER_PROFILES_AGE  # (a hung read is not)
        profiles_only = not fresh and not watching and snapshot is not None \
            and snapshot.space == space and snapshot.mark[0] == url and snapshot.mark[1] is not None \
            and (upkeep_reading or (asked - self._watched <= PROVIDER_SNAPSHOT_AGE
                                    and asked - snapshot.taken <= max_age))
        if profiles_only:
            newest_profile = session.scalar(select(func.max(ProviderProfile.updated_at)))
            if newest_profile == snapshot.mark[1]:  # type: ignore[union-attr]
                return snapshot  # type: ignore[return-value]
            mark = (url, newest_profile, snapshot.mark[2])  # type: ignore[union-attr]
        else:
            # Two index lookups: a profile that changed (or joined) and a new rating show here at once. A deleted
            # profile does not; if picked, the capacity check finds it gone and the providers are read again.
            newest_profile, newest_rating = session.execute(select(
                select(func.max(ProviderProfile.updated_at)).scalar_subquery(),
                select(func.max(Rating.created_at)).scalar_subquery(),
            )).one()
            mark = (url, newest_profile, newest_rating)

        def current(snapshot: _ProviderSnapshot | None) -> bool:
            # (profiles_only: a snapshot with the newest profile change is current whatever ratings it counts)
            return snapshot is not None and snapshot.space == space \
                and (_newer_profiles(snapshot.mark, mark) if profiles_only else snapshot.mark == mark) \
                and (snapshot.taken >= asked  # read by another thread after this call began: as new as one read here
                     or (not fresh and time.monotonic() - snapshot.taken <= max_age)) \
                and not recheck  # (providers to read again: only a read of this call's does)

        snapshot = self._providers
        if current(snapshot):
            return snapshot  # type: ignore[return-value]
        if profiles_only:
            # A profile changed: a batch ranks with the change, and does not wait for a read under way (the
            # upkeep's, of every profile once a minute: 3.6 s at 100,000 providers).
            patched = self._patch(session, encoder, mark)
            if patched is not None:
                return patched
            # too many changed, or a vector dropped meanwhile: read as below
        elif not fresh and self._building.locked() and snapshot is not None and snapshot.space == space \
                and snapshot.mark[:2] == mark[:2]:
            # Another thread is reading a newer one (its age is up, or a rating changed): this batch goes on with
            # this one meanwhile rather than wait (offers picked on it are checked under lock). After a profile
            # change it waits: a provider who just joined or edited their profile is ranked by the next batch.
            return snapshot
        with self._building:
            snapshot = self._providers
            if current(snapshot):  # read by another thread meanwhile
                return snapshot  # type: ignore[return-value]
            built: _ProviderSnapshot | None = None
            meanwhile = self._collect()
            try:
                built = self._read_snapshot(session, snapshot, encoder, mark, asked, recheck)
            finally:
                with self._providers_lock:
                    self._stop_collecting(meanwhile)
                    if built is not None:
                        # Offers committed while the providers were read may be missing from it: counted now
                        # (twice, should the read have seen them: a provider then looks fuller than they are
                        # until the next read, never emptier).
                        self._replay(built, meanwhile)
                        self._providers = built
            # If this transaction rolls back, the snapshot may count offers that were never made.
            _when_transaction_ends(session, "after_rollback", functools.partial(self._expire, built))
            return built  # type: ignore[return-value]

    def _patch(self, session: Session, encoder: Encoder, mark: tuple[Any, ...]) -> _ProviderSnapshot | None:
        """The current snapshot with the profiles changed since it was read put in (with those providers' own
        counts; everyone else's counts, its ``taken`` and its ratings mark stay the snapshot's), installed
        unless another thread put a snapshot in place meanwhile. One thread at a time, but beside a read under
        way (the upkeep's, under _building). None when every profile should be read instead."""
        with self._patching:
            snapshot = self._providers
            if snapshot is None or snapshot.space != encoder.model_id or snapshot.mark[0] != mark[0] \
                    or snapshot.mark[1] is None:
                return None
            if _newer_profiles(snapshot.mark, mark):  # patched by another batch meanwhile
                return snapshot
            built: _ProviderSnapshot | None = None
            change = None
            meanwhile = self._collect()
            try:
                change = self._profile_changes(session, snapshot, encoder, counted=True)
            finally:
                with self._providers_lock:
                    self._stop_collecting(meanwhile)
                    if change is not None:
                        # Copied under this lock with every offer committed so far counted in it. Read in no session
                        # as far as _missing_from can tell: the old counts and the new rows come from different
                        # transactions, so each session's own offers are counted on top (fuller).
                        records, closed, updated = change
                        base, now_in_place = snapshot, self._providers
                        if now_in_place is not snapshot and now_in_place is not None \
                                and now_in_place.space == snapshot.space and now_in_place.mark[0] == mark[0]:
                            # Replaced meanwhile by a read of the upkeep's, which counts the offers committed since:
                            # this batch ranks on that one with the changes put in (the next batch patches it in
                            # place, if it lacks them).
                            base = now_in_place
                        built = _ProviderSnapshot(base.index.with_changes(records, closed),
                                                  (mark[0], mark[1], snapshot.mark[2]), base.taken, 0,
                                                  snapshot.space, snapshot.profiles_read, updated)
                        self._replay(built, meanwhile, {r.provider_id for r in records})
                        # Dropped meanwhile (a rollback, a stale pick) or replaced: this batch ranks on the patch,
                        # which is not put in place (offers committed since a drop were counted in no snapshot).
                        if now_in_place is snapshot:
                            self._providers = built
        if built is None:
            return None
        _when_transaction_ends(session, "after_rollback", functools.partial(self._expire, built))
        return built

    def _collect(self) -> list[Counter[str]]:
        """A list that the offers committed from now on are added to (until removed from _collecting)."""
        meanwhile: list[Counter[str]] = []
        with self._providers_lock:
            self._collecting.append(meanwhile)
        return meanwhile

    def _stop_collecting(self, meanwhile: list[Counter[str]]) -> None:
        """No more offers are added to ``meanwhile`` (called with _providers_lock held)."""
        self._collecting = [c for c in self._collecting if c is not meanwhile]  # (lists compare by value)

    @staticmethod
    def _replay(built: _ProviderSnapshot, meanwhile: list[Counter[str]], only: set[str] | None = None) -> None:
        """Count in ``built`` the offers committed while it was read (of the providers ``only``, if given: the
        others' counts were copied from the snapshot they were counted in). Called with _providers_lock held."""
        for offers in meanwhile:
            for provider_id, n in offers.items():
                if provider_id in built.index.row_of and (only is None or provider_id in only):
                    built.index.record_offer(provider_id, n)

    def _read_snapshot(self, session: Session, snapshot: _ProviderSnapshot | None, encoder: Encoder,
                       mark: tuple[Any, ...], asked: float, recheck: Collection[uuid.UUID] = ()) -> _ProviderSnapshot:
        """A new snapshot with the counts read: only the profiles changed since ``snapshot`` put in while that
        is allowed (every profile read in the last PROVIDER_PROFILES_AGE seconds, few changed, the number open
        for work as patched), else every profile read (called with ``_building`` held). A fresh read (picks
        that did not hold) is one of these too: what it is for, the slots other processes' offers took, is in
        the counts; ``recheck``, the providers the check under lock turned away, are read whatever their
        ``updated_at`` (a profile written without moving it, an account closed: neither shows as a change)."""
        from marketplace.domain.offers.services import provider_loads

        space = encoder.model_id
        loads = provider_loads(session)  # (before any profile is embedded: see _collecting)
        if snapshot is not None and snapshot.space == space and snapshot.mark[0] == mark[0] \
                and snapshot.mark[1] is not None and asked - snapshot.profiles_read < PROVIDER_PROFILES_AGE:
            # Only the profiles changed since are read (a read of every profile took 3.6 s at 100,000
            # providers, bench.snapshot), and the counts.
            change = self._profile_changes(session, snapshot, encoder, recheck=recheck)
            if change is not None:
                records, closed, updated = change
                index = snapshot.index.with_changes(records, closed)
                # An account deactivated or a profile deleted changes no ``updated_at``: every profile is read
                # when the number open for work is not what the patched index holds.
                if self._open_count(session) == len(index):
                    recent, ratings = self._counts(session)
                    index = index.with_counts({str(k): v for k, v in loads.items()},
                                              {str(k): v for k, v in recent.items()},
                                              {str(k): v for k, v in ratings.items()})
                    return _ProviderSnapshot(index, mark, asked, id(session), space, snapshot.profiles_read, updated)
        rows = self._open_profiles(session)
        index = ProviderIndex(self.provider_records(session, loads, encoder, rows), dim=encoder.dim)
        return _ProviderSnapshot(index, mark, asked, id(session), space, asked,
                                 {r.account_id: r.updated_at for r in rows})

    def _profile_changes(self, session: Session, snapshot: _ProviderSnapshot, encoder: Encoder, counted: bool = False,
                         recheck: Collection[uuid.UUID] = ()
                         ) -> tuple[list[ProviderRecord], list[str], dict[uuid.UUID, datetime]] | None:
        """The profiles changed since ``snapshot`` was read, for ``ProviderIndex.with_changes``: the providers
        to put in (edited profiles embedded again, providers who joined), the ids of those who stopped taking
        work, and the ``updated_at`` of each provider in the result; None when so many changed that every
        profile should be read instead. ``counted``: the records carry the providers' loads, recent offers and
        ratings (else none: the caller puts in everyone's). ``recheck``: providers read again whatever their
        ``updated_at`` says (put in as they are now, or taken out)."""
        from marketplace.domain.offers.services import provider_loads

        with self._spaces_lock:
            self._space(encoder)  # raises ModelReplaced, as a read of every profile would
        P = ProviderProfile
        index, updated = snapshot.index, snapshot.updated
        since = snapshot.mark[1] - PROFILE_CHANGE_LAG
        # Ids and times first: those of the last PROFILE_CHANGE_LAG were seen by the last read mostly.
        changed = [pid for pid, at in session.execute(select(P.account_id, P.updated_at).where(P.updated_at >= since))
                   if updated.get(pid) != at or str(pid) not in index.row_of]
        recheck = set(recheck)
        changed += recheck.difference(changed)
        if len(changed) > PATCH_SHARE * max(len(index), 64):
            return None
        rows = [r for k in range(0, len(changed), 1000) for r in session.execute(
            select(P.account_id, P.updated_at, P.categories, P.capacity, P.accepting_work, P.hourly_rate,
                   P.rate_currency, Account.is_active)
            .join(Account, Account.id == P.account_id).where(P.account_id.in_(changed[k:k + 1000])))]
        opened, closed = [], []
        for r in rows:
            if r.accepting_work and r.capacity > 0 and r.is_active:
                if updated.get(r.account_id) != r.updated_at or str(r.account_id) not in index.row_of \
                        or r.account_id in recheck:
                    opened.append(r)
            elif str(r.account_id) in index.row_of:
                closed.append(r.account_id)
        # a rechecked provider whose profile is gone (the account erased) leaves too
        closed += [pid for pid in recheck.difference(r.account_id for r in rows) if str(pid) in index.row_of]
        if not opened and not closed:
            return [], [], updated
        if closed:
            with self._spaces_lock:  # a provider no longer open for work leaves no vector in any space
                for space in self._spaces.values():
                    for gone in closed:
                        space.pop(gone, None)
        if encoder.model_id != self.encoder.model_id:  # kept up to date for the next frozen model
            self._fill_space(session, self.encoder, rows=opened, prune=False)
        vectors = self._fill_space(session, encoder, rows=opened, prune=False)[1]
        with self._spaces_lock:
            if any(r.account_id not in vectors for r in opened):
                return None  # dropped by a fill on an older read of every profile (warm_up): read them all
            picked = {r.account_id: vectors[r.account_id][1] for r in opened}
        ids = list(picked)
        loads, (recent, ratings) = (provider_loads(session, ids), self._counts(session, ids)) if counted and ids \
            else ({}, ({}, {}))
        records = [self._record(r, picked[r.account_id], loads, recent, ratings) for r in opened]
        updated = dict(updated)
        for c in closed:
            updated.pop(c, None)
        updated.update((r.account_id, r.updated_at) for r in opened)
        return records, [str(c) for c in closed], updated

    @staticmethod
    def _missing_from(snapshot: _ProviderSnapshot, session: Session) -> Counter[str]:
        """The offers ``session`` made, not yet committed, that ``snapshot`` does not count: all of them,
        unless the snapshot was read inside this same transaction, after some of them."""
        missing: Counter[str] = Counter()
        for made_at, offers in session.info.get(_UNCOMMITTED, ()):
            if snapshot.session != id(session) or made_at > snapshot.taken:
                missing.update(offers)
        return missing

    def refresh_providers(self, session: Session, encoder: Encoder | None = None) -> None:
        """Bring the provider snapshot in ``encoder``'s space (default :meth:`ranking_encoder`) up to date,
        encoding new or edited profiles, e.g. ahead of a write transaction that will rank providers."""
        self._provider_snapshot(session, encoder or self.ranking_encoder())

    def count_offers(self, session: Session, offers: Counter[str]) -> None:
        """``offers`` (per provider id) were made in ``session``'s transaction: once it commits, count them in
        the current snapshot unless it was read after the commit (then they are in it already)."""
        if not offers:
            return
        pending = session.info.get(_UNCOMMITTED)
        if pending is None:
            pending = session.info[_UNCOMMITTED] = []
            _when_transaction_ends(session, "after_commit", self._committed)
            _when_transaction_ends(session, "after_rollback", lambda s: s.info.pop(_UNCOMMITTED, None))
        pending.append((time.monotonic(), offers))

    def _committed(self, session: Session) -> None:
        committed_at = time.monotonic()
        with self._providers_lock:
            snapshot = self._providers
            if snapshot is not None and snapshot.taken < committed_at:
                for provider_id, n in self._missing_from(snapshot, session).items():
                    if provider_id in snapshot.index.row_of:
                        snapshot.index.record_offer(provider_id, n)
            if self._collecting:  # for the snapshots being read or patched now
                made: Counter[str] = Counter()
                for _, offers in session.info.get(_UNCOMMITTED, ()):
                    made.update(offers)
                for meanwhile in self._collecting:
                    meanwhile.append(made)
        session.info.pop(_UNCOMMITTED, None)

    def forget_providers(self) -> None:
        """Drop the provider snapshot: the next batch reads every profile again."""
        with self._providers_lock:
            self._providers = None

    def expire_providers(self) -> None:
        """Read the providers' counts again for the next batch (with the profiles changed since, as any read
        within PROVIDER_PROFILES_AGE): for picks that did not hold because other processes' offers took the
        providers' slots."""
        if self._providers is not None:
            self._expire(self._providers)

    def _expire(self, snapshot: _ProviderSnapshot, _session: Session | None = None) -> None:
        """``snapshot``, if still in place, is due to be read again: the next read takes its counts afresh (and
        the profiles changed since), not every profile (2.1 – 3.6 s at 100,000 providers against ~0.1 s for the
        counts; bench.snapshot). For a routing transaction that read or patched it and rolled back: the snapshot may
        count that transaction's offers, which were never made, so providers look fuller than they are (never
        emptier) until then. Batches in the meantime rank on it as on any snapshot whose age is up."""
        with self._providers_lock:
            if self._providers is snapshot:
                self._providers = replace(snapshot, taken=-np.inf)

    @staticmethod
    def _open(query: Any) -> Any:
        """``query`` over ProviderProfile, kept to the profiles open for work (a deactivated account cannot sign
        in to answer an offer)."""
        P = ProviderProfile
        return query.join(Account, Account.id == P.account_id) \
            .where(P.accepting_work.is_(True), P.capacity > 0, Account.is_active.is_(True))

    def _open_profiles(self, session: Session) -> list[Any]:
        """The profiles open for work: rows of the columns ranking needs."""
        P = ProviderProfile
        return list(session.execute(self._open(
            select(P.account_id, P.updated_at, P.categories, P.capacity, P.accepting_work, P.hourly_rate,
                   P.rate_currency))).all())

    def _open_count(self, session: Session) -> int:
        """How many profiles are open for work (the rows :meth:`_open_profiles` reads)."""
        return session.scalar(self._open(select(func.count()).select_from(ProviderProfile))) or 0

    @staticmethod
    def _counts(session: Session, provider_ids: list[uuid.UUID] | None = None
                ) -> tuple[dict[uuid.UUID, int], dict[uuid.UUID, tuple[int, int]]]:
        """Per provider (of ``provider_ids``, default all): offers received in the FAIRNESS_WINDOW, and (stars
        summed, ratings)."""
        recent_q = select(Offer.provider_id, func.count()).where(Offer.created_at > now() - FAIRNESS_WINDOW)
        ratings_q = select(Rating.provider_id, func.sum(Rating.stars), func.count())
        if provider_ids is not None:
            recent_q = recent_q.where(Offer.provider_id.in_(provider_ids))
            ratings_q = ratings_q.where(Rating.provider_id.in_(provider_ids))
        recent = dict(session.execute(recent_q.group_by(Offer.provider_id)).all())
        ratings = {pid: (int(total), int(n)) for pid, total, n in session.execute(ratings_q.group_by(Rating.provider_id))}
        return recent, ratings

    def _space(self, encoder: Encoder) -> dict[uuid.UUID, tuple[datetime, np.ndarray]]:
        """The profile vectors of ``encoder``'s space (called with _spaces_lock held)."""
        if encoder.model_id not in self._spaces and encoder.model_id not in self._kept_spaces():
            # A batch that fetched its model before another thread replaced it: embedding profiles for a model
            # no longer in use (inside its write transaction) is not worth it.
            raise ModelReplaced(f"the routing model of {encoder.model_id} is no longer in use")
        return self._spaces.setdefault(encoder.model_id, {})

    def _fill_space(self, session: Session, encoder: Encoder, most: int | None = None, rows: list[Any] | None = None,
                    prune: bool = True) -> tuple[bool, dict[uuid.UUID, tuple[datetime, np.ndarray]]]:
        """Give the open profiles (``rows``, else read) vectors in ``encoder``'s space: the new or edited ones,
        at most ``most`` of them. The profile texts are loaded only for those. With ``prune`` (``rows`` are all
        the open profiles) the vectors of any other provider go, in every space. Returns whether none is left,
        and the space's vectors (still the caller's should another thread drop the space meanwhile)."""
        rows = self._open_profiles(session) if rows is None else rows
        with self._spaces_lock:  # providers no longer open for work (closed, erased accounts) leave no vector
            vectors = self._space(encoder)
            if prune:
                open_ids = {r.account_id for r in rows}
                for space in self._spaces.values():  # in any space
                    for gone in space.keys() - open_ids:
                        del space[gone]
            stale = [r.account_id for r in rows if vectors.get(r.account_id, (None,))[0] != r.updated_at]
        todo = stale if most is None else stale[:most]
        if todo:
            P = ProviderProfile
            profiles = session.scalars(select(P).where(P.account_id.in_(todo))).all()
            fresh = encoder.encode([profile_text(p) or "provider" for p in profiles])
            with self._spaces_lock:
                for p, v in zip(profiles, fresh, strict=True):
                    vectors[p.account_id] = (p.updated_at, v)
        return len(todo) == len(stale), vectors

    def provider_records(self, session: Session, loads: dict[uuid.UUID, int], encoder: Encoder | None = None,
                         profiles: list[Any] | None = None) -> list[ProviderRecord]:
        """The providers open for work (``profiles``, rows of :meth:`_open_profiles`, else read), with profile
        vectors in ``encoder``'s space (default: the shared one's). The shared encoder's vectors are kept up to
        date in any case: the next taxonomy version starts with a frozen model over them."""
        encoder = encoder or self.encoder
        recent, ratings = self._counts(session)
        profiles = self._open_profiles(session) if profiles is None else profiles
        if encoder.model_id != self.encoder.model_id:
            self._fill_space(session, self.encoder, rows=profiles)
        filled = self._fill_space(session, encoder, rows=profiles)[1]
        with self._spaces_lock:
            vectors = dict(filled)
        # A fill in another thread, on a newer read of the profiles, may have dropped one who stopped taking
        # work since this one's read.
        return [self._record(p, vectors[p.account_id][1], loads, recent, ratings)
                for p in profiles if p.account_id in vectors]

    @staticmethod
    def _record(p: Any, vector: np.ndarray, loads: dict[uuid.UUID, int], recent: dict[uuid.UUID, int],
                ratings: dict[uuid.UUID, tuple[int, int]]) -> ProviderRecord:
        """A provider as routing ranks them, from a profile row (:meth:`_open_profiles`) and the counts."""
        stars, count = ratings.get(p.account_id, (0, 0))
        return ProviderRecord(
            provider_id=str(p.account_id), vector=vector, categories=frozenset(p.categories), capacity=p.capacity,
            load=loads.get(p.account_id, 0), accepting_work=p.accepting_work, hourly_rate=p.hourly_rate,
            rate_currency=p.rate_currency, recent_offers=recent.get(p.account_id, 0), rating_sum=stars,
            rating_count=count)


_engine: RoutingEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> RoutingEngine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = RoutingEngine()
        return _engine
