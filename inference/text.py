"""Report text -> sentences -> scores against each finding's description and negation. Pure functions."""

import re

import numpy as np
from numpy.typing import NDArray

from inference.manifest import Manifest

# A sentence ends at . ! or ? followed by white space; report headings ("IMPRESSION:") stay
# with their sentence, which does not change what it says.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The non-empty sentences of a report text."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def anchor_texts(manifest: Manifest) -> list[str]:
    """The texts to embed once per model: every output's description, then every negation."""
    return [o.description for o in manifest.outputs] + [o.negation for o in manifest.outputs]


def scores(manifest: Manifest, embedded: NDArray[np.float32], anchors: NDArray[np.float32]) -> NDArray[np.float64]:
    """One 0..1 score per output for a report whose sentences are the rows of `embedded`.

    Embeddings are L2-normalised, so a dot product is the cosine similarity. A sentence votes
    for a finding only when it is about it (similarity to the description or its negation at
    least `relevance`), with the margin description - negation; the report takes its strongest
    vote, through a logistic function with the manifest's temperature. No relevant sentence
    scores 0.
    """
    post = manifest.postprocessing
    n = len(manifest.outputs)
    if len(embedded) == 0:
        return np.zeros(n, dtype=np.float64)
    e = np.asarray(embedded, dtype=np.float64)
    positive = e @ np.asarray(anchors[:n], dtype=np.float64).T
    negative = e @ np.asarray(anchors[n:], dtype=np.float64).T
    relevant = np.maximum(positive, negative) >= post.relevance
    margin = np.where(relevant, positive - negative, -np.inf).max(axis=0)
    with np.errstate(over="ignore"):
        return np.asarray(1.0 / (1.0 + np.exp(-margin / post.temperature)), dtype=np.float64)
