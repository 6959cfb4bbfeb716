"""Pure routing logic on arrays and dataclasses: taxonomy, Router (categorize or abstain), Matcher (rank)."""

from routing.matcher import Candidate, Matcher, PartnerCandidate, PartnerPool, PartnerRecord, ProviderRecord
from routing.router import Decision, Router
from routing.scrub import scrub_pii
from routing.taxonomy import CategorySpec, Taxonomy

__all__ = [
    "Candidate",
    "CategorySpec",
    "Decision",
    "Matcher",
    "PartnerCandidate",
    "PartnerPool",
    "PartnerRecord",
    "ProviderRecord",
    "Router",
    "Taxonomy",
    "scrub_pii",
]
