"""The grounding guard: generated sentences may only state what the inputs state (adversarial cases)."""

from __future__ import annotations

import pytest

from models.grounding import check, split_sentences

SOURCES = [
    "Leaking kitchen tap",
    "The kitchen mixer tap drips all night; please replace the cartridge before Friday.",
    "Owen Caldwell", "Licensed plumber, repairs and installs",
    "I have been a licensed plumber for 15 years and handle everything from dripping taps to water heaters.",
    "Hello, thank you for posting. My rate is 70.00 per hour.",
]


@pytest.mark.parametrize("sentence", [
    "Hello, and thanks for posting about your leaking kitchen tap.",
    "I'm Owen Caldwell, a licensed plumber with 15 years of experience.",
    "I understand the mixer tap drips all night and the cartridge needs replacing before Friday.",
    "My rate is 70 per hour.",
])
def test_sentences_made_of_the_inputs_are_kept(sentence: str) -> None:
    verdict = check(sentence, SOURCES)
    assert verdict.accepted and verdict.kept == (sentence,), verdict.dropped


@pytest.mark.parametrize("sentence, reason", [
    ("The whole job will cost 120.", "number '120'"),
    ("It comes to about €95 all in.", "number '95'"),
    ("I charge in dollars.", "price 'dollars'"),
    ("I have 20 years of experience.", "number '20'"),
    ("I have two vans.", "number 'two'"),
    ("I can come on Saturday morning.", "date 'Saturday'"),
    ("I could do it tomorrow.", "date 'tomorrow'"),
    ("The repair would be done in March.", "date 'March'"),
    ("My colleague John will bring the parts.", "name or place 'John'"),
    ("I work all over Leeds and Bradford.", "name or place 'Leeds'"),
    ("I guarantee the work.", "commitment 'guarantee'"),
    ("All parts are covered by my insurance.", "commitment 'insurance'"),
    ("I will replace the cartridge.", "commitment 'i will'"),
    ("I'll bring a new mixer tap.", "commitment 'i'll'"),
    ("Call me on +44 7700 900123.", "contact detail"),
    ("See my reviews at https://example.com/owen.", "contact detail"),
    ("Write to owen@example.com for a quote.", "contact detail"),
])
def test_a_sentence_that_invents_a_fact_is_dropped_and_says_why(sentence: str, reason: str) -> None:
    verdict = check(f"Thanks for posting your kitchen tap. {sentence}", SOURCES)
    assert verdict.kept == ("Thanks for posting your kitchen tap.",)
    assert verdict.dropped[0][0] == sentence and reason in verdict.dropped[0][1]


def test_the_generated_text_is_rejected_when_too_little_survives() -> None:
    text = ("Thanks for posting. I can come on Monday. It will cost 80. My colleague Sam helps. "
            "I guarantee it.")
    verdict = check(text, SOURCES)
    assert not verdict.accepted and len(verdict.kept) == 1 and len(verdict.dropped) == 4
    assert not check("", SOURCES).accepted
    assert verdict.as_dict()["dropped"][0] == {"sentence": "I can come on Monday.",
                                               "reason": "date 'Monday' not in the inputs"}


def test_sentences_split_on_stops_and_lines() -> None:
    assert split_sentences("One. Two?\nThree!  Four") == ["One.", "Two?", "Three!", "Four"]


def test_text_that_forgets_whose_voice_it_is_in_is_not_used_at_all() -> None:
    verdict = check("Thanks for posting your kitchen tap. I'm sorry for the confusion, but as an AI I can't help. "
                    "The mixer tap drips all night.", SOURCES)
    assert not verdict.accepted and verdict.dropped[0][1] == "not written as the provider"


def test_an_unfinished_last_sentence_is_dropped() -> None:
    verdict = check("Thanks for posting your kitchen tap. I understand the mixer tap drips all", SOURCES)
    assert verdict.kept == ("Thanks for posting your kitchen tap.",)
    assert verdict.dropped == (("I understand the mixer tap drips all", "unfinished sentence"),)


def test_a_sentence_mostly_of_words_the_inputs_never_used_is_dropped() -> None:
    verdict = check("Thanks for posting your kitchen tap. I love baking sourdough bread with organic flour.", SOURCES)
    assert verdict.dropped[0][1].startswith("words not from the inputs: love, baking, sourdough")
