"""The grounding guard: a generated sentence may only state what the inputs state.

A sentence is dropped when it brings in a number, date, price, name, place, contact detail or commitment that
none of the inputs (the task, the provider's profile, the composed draft) contains. The check is lexical and
deliberately strict: a dropped good sentence costs a little fluency, a kept invented one could cost a
customer money. The draft falls back to the composer's text when too little survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NUMBER_WORDS = frozenset(
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand "
    "thousands million millions dozen dozens half quarter double twice triple".split()
)
DATE_WORDS = frozenset(
    "january february march april june july august september october november december jan feb mar apr jun "
    "jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday today tomorrow "
    "tonight yesterday weekend weekday midnight noon".split()
)
CURRENCY_WORDS = frozenset("€ $ £ eur usd gbp euro euros dollar dollars pound pounds cent cents".split())
# Promises a provider would be held to. A phrase is allowed when the inputs contain it (a profile that says
# "licensed" may say so again).
COMMITMENTS = (
    "guarantee", "promise", "warrant", "refund", "money back", "free of charge", "for free", "no charge",
    "no extra", "discount", "insured", "insurance", "certified", "licensed", "accredited", "same day",
    "same-day", "24/7", "immediately", "right away", "asap", "as soon as possible", "within", "on time",
    "i will", "i'll", "we will", "we'll", "i can start", "i can finish", "i can deliver", "i can be there",
    "i can come", "i can do it", "i am available", "i'm available", "deadline",
)
# Capitalised words that are not names or places.
COMMON_CAPITALISED = frozenset(
    "i i'm i'd i'll i've hello hi dear thanks thank best regards kind sincerely yes no ok okay please "
    "as to my your our the a an this that these those it if when before after and but so also".split()
)
CONTACT = re.compile(r"https?://|www\.|\S+@\S+\.\w+|\+?\d[\d\s().-]{7,}\d")
NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][\w'’-]*|[€$£]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Words any reply may use: greetings, courtesy, and the plain verbs of offering to help. Every other word of
# four letters or more in a kept sentence must come from the inputs, mostly (see MIN_GROUNDED_WORDS).
CONVERSATIONAL = frozenset(
    "hello thanks thank glad happy pleased delighted great interested reaching reach posting posted request "
    "sounds like would could with that this your what need needs want wants help helping work working "
    "project task job about from have here there they them then than just also very really well good sure "
    "understand understood read description details look looking forward hear hearing let know questions "
    "before start started experience experienced offer offering best regards kind dear team support "
    "happy make sure take care exactly problem issue fixing handle handling".split()
)
MIN_GROUNDED_WORDS = 0.8
# A small model sometimes forgets who it is writing as.
OUT_OF_ROLE = re.compile(r"\b(?:an? (?:ai|language model|assistant|chatbot)|as an ai|i'm not a|i am not a|"
                         r"thank me|thank your\b|i'm not sure|i am not sure|"
                         r"sorry for (?:the|any) confusion)\b")
OUT_OF_ROLE_REASON = "not written as the provider"
# Courtesy, not a promise: "I'll be happy to help" commits to nothing the task does not already ask for.
PLEASANTRY = re.compile(r"\b(?:i will|i'll|i would|i'd|we will|we'll|we would)\s+(?:be\s+)?"
                        r"(?:happy|glad|pleased|delighted)\s+to\b")


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    accepted: bool
    kept: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]  # (sentence, why)

    @property
    def text(self) -> str:
        return " ".join(self.kept)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "kept": len(self.kept),
                "dropped": [{"sentence": s, "reason": r} for s, r in self.dropped]}


class _Sources:
    def __init__(self, texts: Iterable[str]) -> None:
        joined = " ".join(t for t in texts if t)
        self.lower = " ".join(joined.lower().replace("’", "'").split())
        self.words = {w.lower().replace("’", "'") for w in WORD.findall(joined)}
        self.numbers = {n.replace(",", "") for n in NUMBER.findall(joined)}
        self.numbers |= {n.rstrip("0").rstrip(".") for n in self.numbers if "." in n}

    def has_number(self, number: str) -> bool:
        n = number.replace(",", "")
        return n in self.numbers or (("." in n) and n.rstrip("0").rstrip(".") in self.numbers)


def _unsupported(sentence: str, src: _Sources) -> str | None:
    """Why a sentence is not supported by the sources, or None."""
    if CONTACT.search(sentence):
        return "contact detail or link"
    if OUT_OF_ROLE.search(sentence.lower().replace("’", "'")):
        return OUT_OF_ROLE_REASON

    for number in NUMBER.findall(sentence):
        if not src.has_number(number):
            return f"number '{number}' not in the inputs"
    words = WORD.findall(sentence)
    for i, word in enumerate(words):
        low = word.lower().replace("’", "'")
        if low in CURRENCY_WORDS and low not in src.words:
            return f"price '{word}' not in the inputs"
        if (low in NUMBER_WORDS or low in DATE_WORDS) and low not in src.words:
            return f"{'date' if low in DATE_WORDS else 'number'} '{word}' not in the inputs"
        if i > 0 and word[0].isupper() and low not in COMMON_CAPITALISED and low not in src.words:
            return f"name or place '{word}' not in the inputs"
    lowered = PLEASANTRY.sub("glad to", " ".join(sentence.lower().replace("’", "'").split()))
    for phrase in COMMITMENTS:
        if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", lowered) and phrase not in src.lower:
            return f"commitment '{phrase}' not in the inputs"
    # Last, the catch-all: mostly the inputs' own words (off-topic text, another language, a persona).
    content = [w.lower().replace("’", "'") for w in WORD.findall(sentence) if len(w) >= 4 and w.isalpha()]
    foreign = [w for w in content if w not in src.words and w not in CONVERSATIONAL]
    if content and len(foreign) > (1 - MIN_GROUNDED_WORDS) * len(content):
        return f"words not from the inputs: {', '.join(foreign[:4])}"
    return None


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s and s.strip()]


def check(generated: str, sources: Iterable[str], min_kept_share: float = 0.5) -> GuardVerdict:
    """Keep the sentences of ``generated`` that the sources support. Accepted when at least one sentence and
    at least ``min_kept_share`` of them survive; otherwise the caller keeps the composer's text."""
    src = _Sources(sources)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    sentences = split_sentences(generated)
    for i, sentence in enumerate(sentences):
        why = _unsupported(sentence, src)
        if why is None and i == len(sentences) - 1 and not sentence.endswith((".", "!", "?", "”", '"')):
            why = "unfinished sentence"  # generation stopped at its token limit
        if why is None:
            kept.append(sentence)
        else:
            dropped.append((sentence, why))
    # Text that forgot whose voice it is in cannot be trusted anywhere: none of it is used.
    confused = any(why == OUT_OF_ROLE_REASON for _, why in dropped)
    accepted = bool(kept) and not confused and len(kept) >= min_kept_share * len(sentences)
    return GuardVerdict(accepted, tuple(kept), tuple(dropped))
