"""QIDO-RS (PS3.18 10.6): searching the studies, series and instances we hold, at /dicomweb.

The same matching as C-FIND (storage.dicom_query), audited the same way (integration.dicom_queries,
DCM 110112), under the API's bearer tokens: a search needs a SMART scope that searches
ImagingStudy (system/ImagingStudy.s or .rs; system/*.rs covers it). Query parameters (8.3.4):
attributes by keyword or tag, with a comma-separated list of UIDs where UI allows it;
`includefield` (a list, or "all"); `fuzzymatching` (false, or true answered with a Warning, as
we match literally); `limit` and `offset`. Results are DICOM JSON (application/dicom+json, F.2);
no match is 204 No Content (8.3.4.4.1, 10.6.3.1); a malformed parameter is 400 with the reason.
"""

import json
import re
from dataclasses import dataclass

from fastapi import APIRouter, Request, Response
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from fhir_api.config import ApiSettings
from fhir_api.dicomweb.access import require_imaging
from fhir_api.dicomweb.urls import base_url
from fhir_api.deps import EngineDep, PrincipalDep, SettingsDep, client_address
from fhir_api.errors import BadRequest, NotAcceptable
from integration.dicom_queries import identifier, search
from storage.dicom_query import KEYS, LEVELS, UNIQUE, Level, Match, Query, QueryError, level_keys, supported

DICOM_JSON = "application/dicom+json"
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
# Attributes returned by default at each level (PS3.18 10.6.3.3), besides the unique keys above.
_DEFAULTS: dict[Level, tuple[str, ...]] = {
    "STUDY": (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": ("Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "AvailableTransferSyntaxUID"),
}

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


@dataclass(frozen=True)
class Resource:
    """A search resource (PS3.18 Table 10.6.1-1): its level, the levels whose attributes it matches
    (Table 10.6.1-4), the levels whose defaults it returns (10.6.3.3), and the UIDs of its path."""

    level: Level
    matched: tuple[Level, ...]
    returned: tuple[Level, ...]
    path: dict[str, str]


def _keyword(name: str) -> str:
    """An attribute named by keyword or tag (8.3.4.1); BadRequest for anything else."""
    if "." in name:
        raise BadRequest(f"{name}: sequence attributes are not supported for searching")
    if _TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise BadRequest(f"{name} is not a tag of the DICOM dictionary")
        return keyword
    if tag_for_keyword(name) is None:
        raise BadRequest(f"{name} is neither a DICOM attribute keyword nor a tag")
    return name


def _uint(name: str, value: str) -> int:
    if not value.isdigit() or int(value) >= 2**31:
        raise BadRequest(f"{name} must be an unsigned integer below 2^31, not {value!r}")
    return int(value)


def _query(resource: Resource, request: Request, settings: ApiSettings) -> tuple[Query, bool]:
    """The Query the request's parameters ask for, and whether it asked for fuzzy matching."""
    keys = dict(resource.path)
    included: list[str] = []
    fuzzy, limit, offset = False, settings.dicomweb_max_results, 0
    for name, value in request.query_params.multi_items():
        if name == "includefield":
            included += ["all"] if value == "all" else [_keyword(n.strip()) for n in value.split(",") if n.strip()]
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise BadRequest(f"fuzzymatching must be true or false, not {value!r}")
            fuzzy = value == "true"
        elif name == "limit":
            limit = min(_uint(name, value), settings.dicomweb_max_results)
        elif name == "offset":
            offset = _uint(name, value)
        elif name in ("TimezoneOffsetFromUTC", "00080201"):
            continue  # dates and times are matched as given: no timezone adjustment (10.6.1.2.1)
        else:
            keyword = _keyword(name)
            if keyword in keys:
                raise BadRequest(f"{name} is given more than once (PS3.18 8.3.4.1)")
            key = KEYS.get(keyword)
            # Patient attributes anywhere, the others on the resources of their level (Table 10.6.1-4).
            if key is None or key.level not in ("PATIENT", *resource.matched):
                raise BadRequest(f"{name} cannot be matched on this resource")
            # A list of UIDs is comma-separated in a URL, backslash-separated in DICOM (8.3.4.1 rule 3).
            keys[keyword] = value.replace(",", "\\") if dictionary_VR(keyword) == "UI" else value
    # The unique keys of the resource's level and the levels above (its Retrieve URL is made of them).
    returns = [UNIQUE[lv] for lv in LEVELS[1 : LEVELS.index(resource.level) + 1]]
    for level in resource.returned:
        returns += _DEFAULTS[level]
    # Attributes of a lower level than the resource's are not returned (10.6.3.3).
    if "all" in included:
        returns += level_keys(resource.level)
    returns += [k for k in [*included, *keys] if k != "all" and supported(k, resource.level)]
    return Query(resource.level, keys, list(dict.fromkeys(returns)), limit=limit, offset=offset), fuzzy


def _accepts_json(request: Request) -> None:
    accept = request.headers.get("accept", "")
    types = {part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()}
    if types and not types & {DICOM_JSON, "application/json", "application/*", "*/*"}:
        raise NotAcceptable(f"cannot answer with {accept}; QIDO-RS here answers {DICOM_JSON}")


def _retrieve_url(base: str, match: Match, level: Level) -> str:
    values = match.values
    url = f"{base}/studies/{match.study_uid}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{values['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{values['SOPInstanceUID']}"
    return url


def _search(resource: Resource, request: Request, engine: EngineDep, settings: ApiSettings, principal: PrincipalDep) -> Response:
    require_imaging(principal, "s")
    _accepts_json(request)
    query, fuzzy = _query(resource, request, settings)
    try:
        matches, total = search(engine, query, who=principal.subject, address=client_address(request), via="QIDO-RS", counted=True)
    except QueryError as exc:
        raise BadRequest(str(exc)) from exc
    base = base_url(request, settings)
    headers = {}
    warnings = []
    if fuzzy:
        warnings.append(f'299 {base}: "The fuzzymatching parameter is not supported. Only literal matching has been performed."')
    remaining = total - query.offset - len(matches)
    if remaining > 0:
        warnings.append(f'299 {base}: "There are {remaining} additional results that can be requested"')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    if not matches:
        return Response(status_code=204, headers=headers)
    results = []
    for match in matches:
        ds = identifier(match.values)
        ds.InstanceAvailability = "ONLINE"  # every instance is in object storage
        ds.RetrieveURL = _retrieve_url(base, match, resource.level)
        results.append(ds.to_json_dict())
    return Response(json.dumps(results), media_type=DICOM_JSON, headers=headers)


# The six search resources of PS3.18 Table 10.6.1-1.


@router.get("/studies")
def all_studies(request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Search every study (All Studies)."""
    return _search(Resource("STUDY", ("STUDY",), ("STUDY",), {}), request, engine, settings, principal)


@router.get("/studies/{study}/series")
def study_series(study: str, request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Search the series of one study (Study's Series)."""
    return _search(Resource("SERIES", ("SERIES",), ("SERIES",), {"StudyInstanceUID": study}), request, engine, settings, principal)


@router.get("/studies/{study}/series/{series}/instances")
def series_instances(
    study: str, series: str, request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Search the instances of one series (Study Series' Instances)."""
    path = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    return _search(Resource("IMAGE", ("IMAGE",), ("IMAGE",), path), request, engine, settings, principal)


@router.get("/studies/{study}/instances")
def study_instances(study: str, request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Search the instances of one study (Study's Instances)."""
    path = {"StudyInstanceUID": study}
    return _search(Resource("IMAGE", ("SERIES", "IMAGE"), ("SERIES", "IMAGE"), path), request, engine, settings, principal)


@router.get("/series")
def all_series(request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Search every series (All Series)."""
    return _search(Resource("SERIES", ("STUDY", "SERIES"), ("STUDY", "SERIES"), {}), request, engine, settings, principal)


@router.get("/instances")
def all_instances(request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep) -> Response:
    """Search every instance (All Instances)."""
    levels: tuple[Level, ...] = ("STUDY", "SERIES", "IMAGE")
    return _search(Resource("IMAGE", levels, levels, {}), request, engine, settings, principal)
