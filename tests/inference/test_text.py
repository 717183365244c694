"""Report text -> clauses: linear in the text, whatever a sender puts in a report (issue 18)."""

import pytest

from inference import text

MB = 1_000_000


def test_clauses_split_at_sentences_contrasts_and_semicolons() -> None:
    report = "No effusion, but there is consolidation; mild cardiomegaly. However, the lungs are clear."
    assert text.clauses(report) == [
        "No effusion", "there is consolidation", "mild cardiomegaly.", "the lungs are clear."
    ]
    assert [text.negated(c) for c in text.clauses(report)] == [True, False, False, False]
    assert text.clauses("butter, thoughtful") == ["butter, thoughtful"]  # whole words only


# Runs of white space or commas with no contrast after them made the old clause pattern
# backtrack quadratically (20 k spaces: 6 s; 1 MB: hours). Not timed: the marker is the backstop.
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "adversarial",
    [
        "a" + " " * MB + "a",
        "," + " ," * (MB // 2) + "x",
        "no " * (MB // 3),
        "a" + " \t" * (MB // 2) + "but",
    ],
    ids=["spaces", "commas", "negations", "tabs-then-but"],
)
def test_a_megabyte_of_adversarial_text_is_split(adversarial: str) -> None:
    found = text.clauses(adversarial)
    assert found and sum(len(c) for c in found) <= len(adversarial)
    assert all(c == c.strip(" \t,") for c in found)
    text.negated(adversarial)
