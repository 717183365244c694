"""Raw outputs -> probabilities -> findings, with the real builtin manifest."""

import numpy as np
import pytest

from inference.postprocess import findings, probabilities
from inference.packages import lookup


def test_softmax_of_logits() -> None:
    probs = probabilities(np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, np.log(3.0)]], dtype=np.float32), "softmax")
    np.testing.assert_allclose(probs, [[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]], atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_sigmoid_and_none() -> None:
    np.testing.assert_allclose(probabilities(np.array([0.0, 2.0], dtype=np.float32), "sigmoid"), [[0.5, 0.8807970779]])
    np.testing.assert_allclose(probabilities(np.array([[0.2, 0.8]], dtype=np.float32), "none"), [[0.2, 0.8]], rtol=1e-6)


@pytest.mark.parametrize(("p_pneumonia", "positive"), [(0.2, False), (0.5, True), (0.93, True)])
def test_threshold_decides_positive(p_pneumonia: float, positive: bool) -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    [finding] = findings(manifest, np.array([[1 - p_pneumonia, p_pneumonia]]))
    assert finding.concept.system == "http://snomed.info/sct"
    assert finding.concept.code == "233604007"
    assert finding.probability == pytest.approx(p_pneumonia)
    assert finding.threshold == 0.5
    assert finding.positive is positive


def test_several_images_of_a_study_are_averaged() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]], dtype=np.float32)
    [finding] = findings(manifest, probabilities(logits, manifest.activation))
    each = probabilities(logits, "softmax")[:, 1]
    assert finding.probability == pytest.approx(float(each.mean()))
    assert finding.positive  # two of three images say pneumonia
