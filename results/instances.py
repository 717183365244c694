"""A result's DICOM objects as instances of the study they describe: the SR of every report, and the
Segmentation a model made, each in its own series.

They go through the ingest core the listener and STOW-RS use (integration/instances), in the
report's transaction: stored, indexed and audited, so C-FIND, C-MOVE, C-GET, QIDO-RS and WADO-RS
return them with the images. They are derived instances (storage.instances): indexing one leaves
the study's status, revision and last arrival as they are, so storing our own result never opens
a revision that would route the study, and its models, again. Their UIDs derive from the job id,
and a replayed result finds its report and stores nothing twice.
"""

import hashlib
import io
import logging
import struct

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import REPORT_CREATED, AuditRecord, Outcome
from integration.errors import CannotUnderstand
from integration.facts import read_header
from integration.instances.ingest import store_in
from integration.instances.metadata import read_file
from integration.messages import InferenceResult
from storage.forwards import ForwardItem
from storage.instances import ReceivedInstance, correlation_id_for_study, study_instances
from storage.objects import ObjectStore, is_dicom_key
from storage.tables.index import Instance, Study

log = logging.getLogger(__name__)

AGENT = "doctorai-results"


def _reference(instance: Instance) -> Dataset:
    """The four UIDs PS3.3 C.17.2.1 references an instance by."""
    ds = Dataset()
    ds.StudyInstanceUID = instance.study_uid
    ds.SeriesInstanceUID = instance.series_uid
    ds.SOPInstanceUID = instance.sop_uid
    ds.SOPClassUID = instance.sop_class_uid
    return ds


def _evidence(session: Session, study_uid: str, input_keys: list[str]) -> list[Dataset]:
    """What the SR references of each input instance, from the index (no header read per input)."""
    keys = set(input_keys)
    return [_reference(i) for i, _ in study_instances(session, study_uid=study_uid) if i.object_key in keys]


def audit_sr(session: Session, result: InferenceResult, entity: str, outcome: Outcome, detail: dict[str, str]) -> None:
    """DCM 110110 Patient Record, create: the SR is a new record of the patient, as the report is."""
    audit_log.append(
        session,
        AuditRecord(
            hop=REPORT_CREATED,
            correlation_id=correlation_id_for_study(result.study_uid),
            agent_who=AGENT,
            entity_what=entity,
            outcome=outcome,
            detail={"job_id": result.job_id, "model": result.model, "model_version": result.model_version, **detail},
        ),
    )


def _store(session: Session, objects: ObjectStore, data: bytes) -> ReceivedInstance:
    sha256 = hashlib.sha256(data).hexdigest()
    item = read_file(io.BytesIO(data), size=len(data), sha256=sha256, calling_ae="", source_address="", derived=True)
    return store_in(session, objects, item, data, agent=AGENT, who=AGENT).item


def store_sr(session: Session, objects: ObjectStore, *, result: InferenceResult, study: Study, replaces: str | None) -> ForwardItem | None:
    """Build the result's SR and store it as an instance of `study`; None when there is none to make
    (the model read no DICOM instance).

    `replaces` is the job id of the report this one amends: its SR, if stored, is the new SR's
    predecessor. Raises storage.errors.StorageUnavailable when the object store cannot read the
    input's header or take the SR (retriable: the whole result is tried again). A header the SR
    cannot be made from is audited as a serious failure and stores nothing; the report stands.
    """
    images = [key for key in result.input_keys if is_dicom_key(key)]
    if not images:
        return None  # a text model's result: its inputs are FHIR resources, not instances of a study
    from results.sr import sr_uids, structured_report  # highdicom, loaded once a result needs it

    previous = []
    if replaces is not None:
        earlier = session.get(Instance, sr_uids(replaces)[1])
        previous = [_reference(earlier)] if earlier is not None else []
    created = result.finished_at or result.occurred_at
    try:
        header = read_header(objects, images[0])
        evidence = _evidence(session, study.study_uid, images)
        sr = structured_report(result, header, evidence, created=created, replaces=previous)
    except (InvalidDicomError, ValueError, TypeError, AttributeError, KeyError, EOFError, struct.error) as exc:
        # The header was stored, so it parsed once; what highdicom refuses in it will not change on a retry.
        audit_sr(session, result, sr_uids(result.job_id)[1], Outcome.SERIOUS_FAILURE, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        log.warning("no SR for job %s of study %s: %s", result.job_id, study.study_uid, exc)
        return None
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)  # with the File Meta Information, as instances are stored
    item = _store(session, objects, buffer.getvalue())
    return ForwardItem(item.sop_uid, item.object_key, item.sop_class_uid, item.transfer_syntax_uid)


def store_outputs(session: Session, objects: ObjectStore, *, result: InferenceResult) -> int:
    """Index the DICOM objects the model stored in the study (a SEG); how many. An unreadable one is skipped, logged."""
    stored = 0
    for key in result.output_keys:
        if not is_dicom_key(key):
            continue  # a NIfTI mask and the like: results, not instances
        try:
            _store(session, objects, objects.get_bytes(key))
        except CannotUnderstand as exc:
            log.error("model output %s of job %s is not a storable instance: %s", key, result.job_id, exc)
            continue
        stored += 1
    return stored
