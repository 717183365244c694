"""The listener's settings: safe defaults in production mode (issue 18, finding 6)."""

import pytest

from dicom_listener.config import DicomSettings


def test_unknown_peers_are_refused_by_default_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCTORAI_DICOM_ALLOW_UNKNOWN_PEERS", raising=False)
    monkeypatch.delenv("DOCTORAI_ENV", raising=False)
    assert DicomSettings().dicom_allow_unknown_peers is True  # a laptop: any modality may try it out
    monkeypatch.setenv("DOCTORAI_ENV", "production")
    assert DicomSettings().dicom_allow_unknown_peers is False
    # An explicit choice stands either way.
    monkeypatch.setenv("DOCTORAI_DICOM_ALLOW_UNKNOWN_PEERS", "true")
    assert DicomSettings().dicom_allow_unknown_peers is True
    assert DicomSettings(dicom_allow_unknown_peers=False).dicom_allow_unknown_peers is False
