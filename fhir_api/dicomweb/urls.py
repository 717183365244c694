"""The URLs DICOMweb answers name: where a study, a series or an instance can be retrieved (PS3.18 10.4.1.1)."""

from fastapi import Request

from fhir_api.config import ApiSettings

PREFIX = "/dicomweb"


def base_url(request: Request, settings: ApiSettings) -> str:
    """The DICOMweb base URL: under the configured public root, else the request's."""
    root = settings.public_base_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}{PREFIX}"


def study_url(base: str, study_uid: str) -> str:
    """The Retrieve URL of a study."""
    return f"{base}/studies/{study_uid}"


def instance_url(base: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The Retrieve URL of one instance."""
    return f"{study_url(base, study_uid)}/series/{series_uid}/instances/{sop_uid}"
