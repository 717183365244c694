"""WADO-RS (PS3.18 10.4): a study, a series or an instance as multipart/related parts of the stored bytes,
their metadata as DICOM JSON, and an instance's frames and bulk data.

Instances are streamed from object storage part by part, so a study of any size goes out without
being held here whole; media types and transfer syntaxes are negotiated in accept.py. Every
retrieve, and every one that finds nothing, is audited (access.py) in the transaction that read
the index, before any byte is sent.
"""

import io
import json
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom import dcmread
from pydicom.uid import UID
from sqlalchemy import Engine

from fhir_api.auth.tokens import Principal
from fhir_api.deps import EngineDep, ObjectStoreDep, PrincipalDep, SettingsDep, client_address
from fhir_api.dicomweb import accept, frames, multipart
from fhir_api.dicomweb.access import audit_retrieve, require_imaging
from fhir_api.dicomweb.metadata import PIXEL_DATA, bulk_tags, instance_metadata
from fhir_api.dicomweb.urls import PREFIX, base_url, instance_url
from fhir_api.errors import BadRequest, NotFound
from integration.facts import read_header
from storage.db import session_scope
from storage.instances import study_instances
from storage.objects import ObjectStore
from storage.tables.index import Instance, Series

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])

# An instance up to this size is read into memory to cut its frames; a larger one into a temporary file.
IN_MEMORY = 16 << 20
# Instances up to PREFETCH_BYTES are fetched whole, up to PREFETCH of them and PREFETCH_BYTES in all
# ahead of the one being sent (what a request holds in memory); larger ones are streamed chunk by chunk.
PREFETCH = 8
PREFETCH_BYTES = 32 << 20
Rows = list[tuple[Instance, Series]]


def _select(
    request: Request,
    engine: Engine,
    principal: Principal,
    *,
    resource: str,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    check: Callable[[Rows], object] | None = None,
) -> Rows:
    """The instances a retrieve names, checked by `check` (406 answers before anything is disclosed), audited."""
    require_imaging(principal, "r")
    with session_scope(engine) as session:
        rows = [
            (i, s)
            for i, s in study_instances(session, study_uid=study)
            if (series is None or s.series_uid == series) and (sop is None or i.sop_uid == sop)
        ]
        if rows and check is not None:
            check(rows)
        named = {k: v for k, v in (("series_uid", series), ("sop_uid", sop)) if v}
        audit_retrieve(
            session,
            principal=principal,
            address=client_address(request),
            study_uid=study,
            resource=resource,
            instances=len(rows),
            detail=named,
        )
    if not rows:
        raise NotFound(f"no {'instance' if sop else 'series' if series else 'study'} with these UIDs is stored")
    return rows


def _explicit_little_endian(data: bytes) -> bytes:
    """An uncompressed instance re-encoded as Explicit VR Little Endian (PS3.5 A.2), pixels untouched."""
    ds = dcmread(io.BytesIO(data), force=True)
    ds.file_meta.TransferSyntaxUID = UID(accept.EXPLICIT_VR_LE)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _whole(objects: ObjectStore, instance: Instance, choice: accept.Choice) -> bytes:
    data = objects.get_bytes(instance.object_key)
    return _explicit_little_endian(data) if choice.transcode else data


def _instance_parts(objects: ObjectStore, rows: Rows, choices: list[accept.Choice], boundary: str) -> Iterator[bytes]:
    """The multipart body: instances up to PREFETCH_BYTES are fetched whole, up to PREFETCH of them and
    PREFETCH_BYTES in all ahead of the one being sent, so the object store's latency overlaps the
    sending; larger ones are streamed in chunks."""
    pool = ThreadPoolExecutor(max_workers=PREFETCH, thread_name_prefix="wado-prefetch")
    ahead: dict[int, Future[bytes]] = {}
    scheduled = 0  # rows[:scheduled] have been looked at

    def schedule(sending: int) -> None:
        nonlocal scheduled
        while scheduled < len(rows) and len(ahead) < PREFETCH:
            instance, choice = rows[scheduled][0], choices[scheduled]
            if not choice.transcode and instance.size > PREFETCH_BYTES:
                if scheduled > sending:
                    return  # streamed when its turn comes; nothing is fetched past it meanwhile
            else:
                in_flight = sum(rows[i][0].size for i in ahead)
                if ahead and in_flight + instance.size > PREFETCH_BYTES:
                    return
                ahead[scheduled] = pool.submit(_whole, objects, instance, choice)
            scheduled += 1

    try:
        for n, ((instance, _), choice) in enumerate(zip(rows, choices)):
            schedule(n)
            fetched = ahead.pop(n, None)
            schedule(n)
            head = multipart.part_head(boundary, choice.content_type(), first=n == 0)
            if fetched is not None:
                yield head + fetched.result()  # one write, one hand-over from this thread, per instance
            else:
                yield head
                yield from objects.stream(instance.object_key)
        yield multipart.close_delimiter(boundary, empty=not rows)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _instances(request: Request, engine: Engine, objects: ObjectStore, principal: Principal, **names: str) -> Response:
    wanted = accept.ranges(request.headers.get("accept"))
    choices: list[accept.Choice] = []

    def negotiate(rows: Rows) -> None:
        choices.extend(accept.instance_choice(wanted, i.transfer_syntax_uid) for i, _ in rows)

    resource = "instance" if "sop" in names else "series" if "series" in names else "study"
    rows = _select(request, engine, principal, resource=resource, check=negotiate, **names)
    boundary = multipart.new_boundary()
    return StreamingResponse(
        _instance_parts(objects, rows, choices, boundary), media_type=multipart.content_type(accept.DICOM, boundary)
    )


def _metadata_array(objects: ObjectStore, rows: Rows, base: str) -> Iterator[bytes]:
    yield b"["
    for n, (instance, series) in enumerate(rows):
        ds = read_header(objects, instance.object_key)
        url = instance_url(base, instance.study_uid, series.series_uid, instance.sop_uid)
        found = instance_metadata(ds, instance_url=url, transfer_syntax=instance.transfer_syntax_uid)
        yield (b"," if n else b"") + json.dumps(found).encode()
    yield b"]"


def _metadata(request: Request, engine: Engine, objects: ObjectStore, principal: Principal, base: str, **names: str) -> Response:
    wanted = accept.ranges(request.headers.get("accept"))
    rows = _select(request, engine, principal, resource="metadata", check=lambda _: accept.json_acceptable(wanted), **names)
    return StreamingResponse(_metadata_array(objects, rows, base), media_type=accept.DICOM_JSON)


@contextmanager
def _local(objects: ObjectStore, instance: Instance) -> Iterator[BinaryIO]:
    """The stored instance where its frames can be cut from: memory while small, else a temporary file."""
    if instance.size <= IN_MEMORY:
        yield io.BytesIO(objects.get_bytes(instance.object_key))
        return
    with tempfile.TemporaryDirectory(prefix="doctorai-wado-") as directory:
        path = Path(directory) / "instance.dcm"
        objects.get_file(instance.object_key, path)
        with path.open("rb") as f:
            yield f


def _multipart(parts: list[bytes], choice: accept.Choice) -> Response:
    boundary = multipart.new_boundary()
    body = b"".join(
        multipart.part_head(boundary, choice.content_type(), first=n == 0) + part for n, part in enumerate(parts)
    ) + multipart.close_delimiter(boundary, empty=not parts)
    return Response(body, media_type=multipart.content_type(choice.part_type, boundary))


def _pixels(
    request: Request, engine: Engine, objects: ObjectStore, principal: Principal, numbers: list[int] | None, **names: str
) -> Response:
    """Frames `numbers` (None: all of them, the pixel bulk data) of one instance."""
    wanted = accept.ranges(request.headers.get("accept"))
    chosen: list[accept.Choice] = []

    def negotiate(rows: Rows) -> None:
        chosen.append(accept.frames_choice(wanted, rows[0][0].transfer_syntax_uid))

    resource = "frames" if numbers else "bulkdata"
    ((instance, _),) = _select(request, engine, principal, resource=resource, check=negotiate, **names)
    with _local(objects, instance) as f:
        layout = frames.pixels(f, instance.size)
        if layout is None:
            raise NotFound("the instance has no pixel data")
        parts = list(frames.frames(f, layout, numbers or list(range(1, layout.frames + 1))))
    return _multipart(parts, chosen[0])


@router.get("/studies/{study}")
def retrieve_study(study: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep) -> Response:
    """Every instance of a study (PS3.18 10.4.1.1.1)."""
    return _instances(request, engine, objects, principal, study=study)


@router.get("/studies/{study}/series/{series}")
def retrieve_series(
    study: str, series: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep
) -> Response:
    """Every instance of a series."""
    return _instances(request, engine, objects, principal, study=study, series=series)


@router.get("/studies/{study}/series/{series}/instances/{sop}")
def retrieve_instance(
    study: str, series: str, sop: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep
) -> Response:
    """One instance."""
    return _instances(request, engine, objects, principal, study=study, series=series, sop=sop)


@router.get("/studies/{study}/metadata")
def study_metadata(
    study: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """The metadata of every instance of a study (PS3.18 10.4.1.1.2)."""
    return _metadata(request, engine, objects, principal, base_url(request, settings), study=study)


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(
    study: str, series: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """The metadata of every instance of a series."""
    return _metadata(request, engine, objects, principal, base_url(request, settings), study=study, series=series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata")
def instance_metadata_route(
    study: str,
    series: str,
    sop: str,
    request: Request,
    engine: EngineDep,
    objects: ObjectStoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """The metadata of one instance."""
    return _metadata(request, engine, objects, principal, base_url(request, settings), study=study, series=series, sop=sop)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}")
def retrieve_frames(
    study: str, series: str, sop: str, frame_list: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep
) -> Response:
    """Frames of one instance, as listed (PS3.18 10.4.1.1.9)."""
    numbers = frames.parse_frame_list(frame_list)
    return _pixels(request, engine, objects, principal, numbers, study=study, series=series, sop=sop)


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}")
def retrieve_bulkdata(
    study: str, series: str, sop: str, tag: str, request: Request, engine: EngineDep, objects: ObjectStoreDep, principal: PrincipalDep
) -> Response:
    """A BulkDataURI of the metadata (PS3.18 10.4.1.1.5): the pixel data as its frames, or another long binary value."""
    try:
        number = int(tag, 16)
    except ValueError as exc:
        raise BadRequest(f"{tag[:16]!r} is not a tag") from exc
    if number == PIXEL_DATA:
        return _pixels(request, engine, objects, principal, None, study=study, series=series, sop=sop)
    wanted = accept.ranges(request.headers.get("accept"))
    choice = accept.Choice(accept.EXPLICIT_VR_LE, accept.OCTET_STREAM)
    ((instance, _),) = _select(
        request, engine, principal, resource="bulkdata", check=lambda _: accept.bulk_acceptable(wanted),
        study=study, series=series, sop=sop,
    )
    ds = read_header(objects, instance.object_key)
    if number not in bulk_tags(ds):
        raise NotFound(f"the instance has no bulk data at {tag[:16]}")
    return _multipart([bytes(ds[number].value)], choice)
