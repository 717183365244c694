"""pynetdicom event handlers: the edge where storage outcomes become DIMSE statuses.

C-STORE answers Success only after the bytes are in object storage and the index row, with its
audit record, is committed (DESIGN.md 5.1). Statuses are from PS3.4 Annex B.2.3.
"""

import logging
import threading
import time
import uuid

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from sqlalchemy import Engine

from audit.log import append
from audit.records import (
    ASSOCIATION_ACCEPTED,
    ASSOCIATION_REJECTED,
    INSTANCE_REFUSED,
    INSTANCE_STORED,
    AuditRecord,
    Outcome,
)
from dicom_listener import metrics
from dicom_listener.errors import CannotUnderstand
from dicom_listener.metadata import read_instance
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.objects import ObjectStore
from storage.queries import correlation_id_for_study, is_known_instance, record_instance

log = logging.getLogger(__name__)

SUCCESS = 0x0000
# PS3.4 B.2.3: "Refused: Out of Resources" (A7xx) - the sender may retry later.
OUT_OF_RESOURCES = 0xA700
# PS3.4 B.2.3: "Error: Cannot understand" (Cxxx).
CANNOT_UNDERSTAND = 0xC000


class StudiesSeen:
    """Which studies each association has sent, so its acceptance is audited once per study."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, set[str]] = {}

    def first(self, assoc: Association, study_uid: str) -> bool:
        """True the first time this association sends an instance of this study."""
        with self._lock:
            studies = self._seen.setdefault(id(assoc), set())
            if study_uid in studies:
                return False
            studies.add(study_uid)
            return True

    def forget(self, assoc: Association) -> None:
        """Drop an association that ended."""
        with self._lock:
            self._seen.pop(id(assoc), None)


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # ErrorComment is LO, 64 characters at most (PS3.7 C.4.2.1.3)
    return ds


def _peer(assoc: Association) -> tuple[str, str]:
    return str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address)


def handle_echo(event: Event) -> int:
    """C-ECHO: Success (PS3.7 9.1.5)."""
    return SUCCESS


def handle_store(event: Event, store: ObjectStore, engine: Engine, seen: StudiesSeen, ae_title: str) -> int | Dataset:
    """C-STORE: store the bytes as received, index them, audit, then answer."""
    started = time.perf_counter()
    calling_ae, address = _peer(event.assoc)
    data = event.encoded_dataset(include_meta=True)
    try:
        item = read_instance(data, calling_ae=calling_ae, source_address=address)
    except CannotUnderstand as exc:
        metrics.INSTANCES.labels("cannot-understand").inc()
        _audit_refusal(engine, calling_ae, address, ae_title, reason=str(exc))
        return _status(CANNOT_UNDERSTAND, str(exc))
    correlation_id = correlation_id_for_study(item.study_uid)
    try:
        with session_scope(engine) as session:
            duplicate = is_known_instance(session, sop_uid=item.sop_uid, sha256=item.sha256)
        if not duplicate:
            # Object first, then the row: a crash in between leaves an unindexed object that the
            # sender's retry overwrites (same key), never a row without its bytes.
            store.put_bytes(item.object_key, data, content_type="application/dicom")
        with session_scope(engine) as session:
            if not duplicate:
                record_instance(session, item=item)
            if seen.first(event.assoc, item.study_uid):
                append(
                    session,
                    AuditRecord(
                        hop=ASSOCIATION_ACCEPTED,
                        correlation_id=correlation_id,
                        agent_who=f"ae:{calling_ae}",
                        agent_address=address,
                        entity_what=f"ae:{ae_title}",
                        detail={"study_uid": item.study_uid},
                    ),
                )
            append(
                session,
                AuditRecord(
                    hop=INSTANCE_STORED,
                    correlation_id=correlation_id,
                    agent_who=f"ae:{calling_ae}",
                    agent_address=address,
                    entity_what=item.sop_uid,
                    # A re-send of identical bytes is acknowledged and recorded, but changes nothing.
                    detail={
                        "study_uid": item.study_uid,
                        "object_key": item.object_key,
                        "sha256": item.sha256,
                        "duplicate": str(duplicate).lower(),
                    },
                ),
            )
    except StorageUnavailable as exc:
        log.warning("storage unavailable, answering out of resources: %s", exc)
        metrics.INSTANCES.labels("out-of-resources").inc()
        return _status(OUT_OF_RESOURCES, "Storage unavailable, retry later")
    metrics.INSTANCES.labels("success").inc()
    metrics.BYTES.inc(item.size)
    metrics.STORE_SECONDS.observe(time.perf_counter() - started)
    return SUCCESS


def _audit_refusal(engine: Engine, calling_ae: str, address: str, ae_title: str, *, reason: str) -> None:
    try:
        with session_scope(engine) as session:
            append(
                session,
                AuditRecord(
                    hop=INSTANCE_REFUSED,
                    correlation_id=f"association-{uuid.uuid4()}",
                    agent_who=f"ae:{calling_ae}",
                    agent_address=address,
                    entity_what=f"ae:{ae_title}",
                    outcome=Outcome.MINOR_FAILURE,
                    detail={"reason": reason},
                ),
            )
    except StorageUnavailable:
        log.error("could not audit a refused instance from %s: database unavailable", calling_ae)


def handle_rejected(event: Event, engine: Engine, ae_title: str) -> None:
    """An association we rejected (unknown called AE title, no acceptable context): audit it."""
    calling_ae, address = _peer(event.assoc)
    metrics.ASSOCIATIONS.labels("rejected").inc()
    try:
        with session_scope(engine) as session:
            append(
                session,
                AuditRecord(
                    hop=ASSOCIATION_REJECTED,
                    correlation_id=f"association-{uuid.uuid4()}",
                    agent_who=f"ae:{calling_ae}",
                    agent_address=address,
                    entity_what=f"ae:{ae_title}",
                    outcome=Outcome.MINOR_FAILURE,
                ),
            )
    except StorageUnavailable:
        log.error("could not audit a rejected association from %s: database unavailable", calling_ae)


def handle_accepted(event: Event) -> None:
    """Count accepted associations (their audit record is written with the first instance of each study)."""
    metrics.ASSOCIATIONS.labels("accepted").inc()


def handle_released(event: Event, seen: StudiesSeen) -> None:
    """An association ended (released or aborted): forget what it sent."""
    seen.forget(event.assoc)
