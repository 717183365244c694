"""STOW-RS (PS3.18 10.5): the API's front door for instances, with exactly the guarantees of C-STORE.

Each part of a `multipart/related; type="application/dicom"` body is spooled as it arrives (memory
while small, a temporary file past DOCTORAI_DICOMWEB_SPOOL_MEMORY_BYTES) and stored through the
ingest core the listener uses (integration/instances): in object storage and indexed, with its
audit record, before it counts as stored; duplicates and new versions by the same duplicate
policy; the study left receiving, so the listener's quiet-period sweep (or the count it announced)
declares it ready. The body is bounded by DOCTORAI_MAX_BODY_BYTES, each part by
DOCTORAI_DICOMWEB_MAX_INSTANCE_BYTES.

The studies are recorded as sent by the pseudo calling AE title DOCTORAI_DICOMWEB_CALLING_AE (for
routing rules, and for the quiet period and duplicate policy of its `dicom_peers` row, if it has
one); the token's subject is the audit agent. The answer is the Store Instances Response Module
(PS3.18 10.5.3) as DICOM JSON; failure reasons are the C-STORE statuses of PS3.4 B.2.3.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from fastapi import APIRouter, Request, Response
from pydicom.dataset import Dataset
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from fhir_api.auth.tokens import Principal
from fhir_api.config import ApiSettings
from fhir_api.deps import PrincipalDep, SettingsDep, client_address
from fhir_api.dicomweb import accept, multipart
from fhir_api.dicomweb.access import require_imaging
from fhir_api.dicomweb.urls import PREFIX, base_url, instance_url, study_url
from fhir_api.errors import BadRequest, UnsupportedMediaType
from integration.dimse_status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
)
from integration.errors import CannotUnderstand, DuplicateRefused
from integration.instances import ingest
from integration.instances.indexer import Job
from integration.instances.metadata import read_file
from integration.instances.spool import Spool
from integration.logs import correlated
from storage.db import read_scope
from storage.errors import StorageUnavailable
from storage.group_commit import GroupCommit
from storage.instances import ReceivedInstance, correlation_id_for_study
from storage.objects import ObjectStore
from storage.peers import get_peer

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])


@dataclass(frozen=True)
class Door:
    """The API's share of the ingest core (integration.instances.ingest.Ingest), built in the lifespan."""

    objects: ObjectStore
    engine: Engine
    indexer: GroupCommit[Job, bool]


@dataclass(frozen=True)
class Sender:
    """Who sends the request's instances, as the index and the audit trail record it."""

    agent: str
    address: str
    calling_ae: str
    policy: ingest.DuplicatePolicy
    target: str


@dataclass
class _Part:
    """One part being received; `too_large` once it passed the per-instance limit (its bytes are dropped)."""

    content_type: str
    spool: Spool
    too_large: bool = False


@dataclass(frozen=True)
class Result:
    """What became of one part: stored (no failure reason) or failed, with the UIDs we could read."""

    sop_class_uid: str = ""
    sop_uid: str = ""
    series_uid: str = ""
    study_uid: str = ""
    failure: int | None = None


def _boundary(content_type: str) -> str:
    kind, parameters = multipart.media_type(content_type)
    if kind != "multipart/related" or parameters.get("type", "").lower() != accept.DICOM:
        raise UnsupportedMediaType('send instances as multipart/related; type="application/dicom" (PS3.18 10.5.1.2)')
    if not parameters.get("boundary"):
        raise BadRequest("the multipart/related Content-Type has no boundary")
    return parameters["boundary"]


def _policy(engine: Engine, settings: ApiSettings) -> ingest.DuplicatePolicy:
    """The pseudo calling AE's duplicate policy: its dicom_peers row's, else the DICOMweb default."""
    with read_scope(engine) as session:
        peer = get_peer(session, ae_title=settings.dicomweb_calling_ae)
    own = peer.duplicate_policy if peer is not None else None
    return cast(ingest.DuplicatePolicy, own or settings.dicomweb_duplicate_policy)


def _refuse(door: Door, sender: Sender, reason: str, item: ReceivedInstance | None, failure: int) -> Result:
    record = ingest.refused_record(
        agent=sender.agent, address=sender.address, reason=reason, item=item, target=sender.target, context="dicomweb"
    )
    ingest.audit(door.engine, record, "a refused instance")
    if item is None:
        return Result(failure=failure)
    return Result(item.sop_class_uid, item.sop_uid, item.series_uid, item.study_uid, failure)


def _store_part(door: Door, sender: Sender, part: _Part, study: str | None) -> Result:
    """Store one complete part through the ingest core; its result (a failure reason per PS3.4 B.2.3)."""
    spool = part.spool
    if part.too_large:
        return _refuse(door, sender, "instance larger than the per-instance limit", None, OUT_OF_RESOURCES)
    if part.content_type not in ("", accept.DICOM):
        return _refuse(door, sender, f"part is {part.content_type[:64]}, not application/dicom", None, CANNOT_UNDERSTAND)
    try:
        with spool.open() as f:
            item = read_file(f, size=spool.size, sha256=spool.sha256, calling_ae=sender.calling_ae, source_address=sender.address)
    except CannotUnderstand as exc:
        return _refuse(door, sender, str(exc), None, CANNOT_UNDERSTAND)
    if study is not None and item.study_uid != study:
        # PS3.18 10.5.1: an instance of another study than the target's is not stored.
        return _refuse(door, sender, "Study Instance UID differs from the request's", item, DATA_SET_DOES_NOT_MATCH)
    try:
        with correlated(correlation_id_for_study(item.study_uid)):
            ingest.store(door, item, spool, policy=sender.policy, agent=sender.agent, address=sender.address)
    except DuplicateRefused as exc:
        return _refuse(door, sender, str(exc), item, DUPLICATE_SOP_INSTANCE)
    except StorageUnavailable as exc:
        log.warning("storage unavailable, failing a STOW-RS part: %s", exc)
        return Result(item.sop_class_uid, item.sop_uid, item.series_uid, item.study_uid, OUT_OF_RESOURCES)
    except SQLAlchemyError as exc:
        log.exception("index refused instance %s", item.sop_uid)
        return _refuse(door, sender, f"index refused it: {type(exc).__name__}", item, PROCESSING_FAILURE)
    return Result(item.sop_class_uid, item.sop_uid, item.series_uid, item.study_uid)


def _sop_item(result: Result) -> Dataset:
    item = Dataset()
    if result.sop_uid:
        item.ReferencedSOPClassUID = result.sop_class_uid
        item.ReferencedSOPInstanceUID = result.sop_uid
    return item


def response_dataset(results: list[Result], *, base: str, study: str | None) -> Dataset:
    """The Store Instances Response Module (PS3.18 10.5.3): what was stored, what failed and why, where to retrieve it."""
    ds = Dataset()
    stored = [r for r in results if r.failure is None]
    studies = {r.study_uid for r in stored}
    if study is not None or len(studies) == 1:
        ds.RetrieveURL = study_url(base, study or studies.pop())
    failed = []
    for result in results:
        if result.failure is not None:
            item = _sop_item(result)
            item.FailureReason = result.failure
            failed.append(item)
    if failed:
        ds.FailedSOPSequence = failed
    referenced = []
    for result in stored:
        item = _sop_item(result)
        item.RetrieveURL = instance_url(base, result.study_uid, result.series_uid, result.sop_uid)
        referenced.append(item)
    if referenced:
        ds.ReferencedSOPSequence = referenced
    return ds


def status_code(results: list[Result]) -> int:
    """PS3.18 Table 10.5.3-1: 200 all stored, 202 some failed, 409 none stored."""
    failures = [r.failure for r in results if r.failure is not None]
    if not failures:
        return 200
    if len(failures) < len(results):
        return 202
    if all(f == OUT_OF_RESOURCES for f in failures):
        # Nothing stored because storage is down: the client should retry, as a C-STORE sender would.
        raise StorageUnavailable("no instance could be stored")
    return 409


async def _receive(request: Request, door: Door, sender: Sender, settings: ApiSettings, study: str | None) -> list[Result]:
    parser = multipart.Parser(_boundary(request.headers.get("content-type", "")))
    results: list[Result] = []
    part: _Part | None = None
    try:
        async for chunk in request.stream():
            for event in parser.feed(chunk):
                if isinstance(event, multipart.PartStart):
                    kind, _ = multipart.media_type(event.headers.get("content-type", ""))
                    part = _Part(kind, Spool(b"", memory_limit=settings.dicomweb_spool_memory_bytes))
                elif part is None:
                    continue
                elif isinstance(event, multipart.PartData):
                    if not part.too_large:
                        part.spool.write(event.data)
                        if part.spool.size > settings.dicomweb_max_instance_bytes:
                            part.too_large = True
                            part.spool.discard()
                else:
                    results.append(await asyncio.to_thread(_store_part, door, sender, part, study))
                    part.spool.discard()
                    part = None
        parser.close()
    finally:
        if part is not None:
            part.spool.discard()
    return results


async def _store(request: Request, principal: Principal, settings: ApiSettings, study: str | None) -> Response:
    require_imaging(principal, "c")
    accept.json_acceptable(accept.ranges(request.headers.get("accept")))
    state = request.app.state
    door = Door(objects=state.object_store, engine=state.engine, indexer=state.indexer)
    sender = Sender(
        agent=principal.subject,
        address=client_address(request),
        calling_ae=settings.dicomweb_calling_ae,
        policy=await asyncio.to_thread(_policy, door.engine, settings),
        target=request.url.path[:256],
    )
    results = await _receive(request, door, sender, settings, study)
    if not results:
        raise BadRequest("the multipart body holds no instance")
    code = status_code(results)
    body = response_dataset(results, base=base_url(request, settings), study=study).to_json()
    return Response(body, status_code=code, media_type=accept.DICOM_JSON)


@router.post("/studies")
async def store_instances(request: Request, principal: PrincipalDep, settings: SettingsDep) -> Response:
    """Store instances of any studies (PS3.18 10.5.1)."""
    return await _store(request, principal, settings, None)


@router.post("/studies/{study}")
async def store_study_instances(study: str, request: Request, principal: PrincipalDep, settings: SettingsDep) -> Response:
    """Store instances of one study; an instance of another study fails (0xA900)."""
    return await _store(request, principal, settings, study)
