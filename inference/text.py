"""Report text -> clauses -> scores against each finding's description. Pure functions.

The method: zero-shot similarity plus negation cues. Each clause of a report is embedded and
compared (cosine) with a sentence reporting each finding; a clause with a negation cue ("no",
"without", "resolved"...: the NegEx trigger idea, Chapman et al., J Biomed Inform 2001) cannot
report a finding, since negated mentions ("No pneumothorax.") are the common case in radiology
reports and sentence embeddings barely tell them apart. A report's score for a finding is its
best clause's similarity, clipped to 0..1.
"""

import re

import numpy as np
from numpy.typing import NDArray

from integration.models.manifest import Manifest

# A sentence ends at . ! or ? followed by white space; report headings ("IMPRESSION:") stay
# with their sentence, which does not change what it says.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A contrast or a semicolon starts a new clause: "no effusion, but there is consolidation".
# Every pattern here matches a literal or one run of one character class, never a quantified
# group followed by more pattern, so matching is linear in the text (no backtracking: a run of
# white space before a missing "but" once made this quadratic, issue 18); the comma and white
# space around a contrast are trimmed from its clauses afterwards.
_CLAUSE_BREAK = re.compile(r";|\b(?:but|however|although|though)\b", re.IGNORECASE)
_CLAUSE_TRIM = " \t\r\n\f\v,"
_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|resolved|resolution of|clear of|absence of|removed|"
    r"ruled out|rule out)\b",
    re.IGNORECASE,
)


def sentences(text: str) -> list[str]:
    """The non-empty sentences of a report text."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def clauses(text: str) -> list[str]:
    """The clauses of a report text: its sentences, split again at contrasts and semicolons."""
    found = (c.strip(_CLAUSE_TRIM) for s in sentences(text) for c in _CLAUSE_BREAK.split(s))
    return [c for c in found if c]


def negated(clause: str) -> bool:
    """Whether a clause carries a negation cue."""
    return _NEGATION.search(clause) is not None


def anchor_texts(manifest: Manifest) -> list[str]:
    """The texts to embed once per model: every output's description."""
    return [o.description for o in manifest.outputs]


def scores(
    manifest: Manifest, clause_texts: list[str], embedded: NDArray[np.float32], anchors: NDArray[np.float32]
) -> NDArray[np.float64]:
    """One 0..1 score per output for a report whose clauses are `clause_texts`, embedded as the rows of `embedded`.

    Embeddings are L2-normalised, so a dot product is the cosine similarity.
    """
    n = len(manifest.outputs)
    affirmed = np.array([not negated(c) for c in clause_texts], dtype=bool)
    if not affirmed.any():
        return np.zeros(n, dtype=np.float64)
    similarity = np.asarray(embedded, dtype=np.float64)[affirmed] @ np.asarray(anchors, dtype=np.float64).T
    return np.asarray(np.clip(similarity.max(axis=0), 0.0, 1.0), dtype=np.float64)
