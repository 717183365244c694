"""A new report's result as a DICOM SR, queued for every enabled DICOM destination that takes results.

A "dicom" destination whose options hold `"results": "sr"` gets, for each job reported, the SR
built by results/sr.py: stored in object storage next to the study's objects (its key derives
from its UIDs, which derive from the job id, so a retried transaction overwrites the same object),
then queued as a forward of kind "result" in the report's transaction (storage/forwards.py). The
forwarder sends it like a study's instances and audits the send (DICOM_SENT).
"""

import io
import logging
import struct

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import REPORT_CREATED, AuditRecord, Outcome
from integration.facts import read_header
from integration.messages import InferenceResult
from storage.destinations import destinations
from storage.forwards import ForwardItem, queue_forward
from storage.objects import ObjectStore, dicom_key
from storage.instances import correlation_id_for_study, study_instances
from storage.tables.index import Study
from storage.tables.outbound import Destination

log = logging.getLogger(__name__)

AGENT = "doctorai-results"
RESULTS_OPTION = "results"
SR = "sr"


def sr_destinations(session: Session) -> list[Destination]:
    """The enabled DICOM destinations whose options ask for results as SR."""
    return [
        d for d in destinations(session, kind="dicom", enabled_only=True) if (d.options or {}).get(RESULTS_OPTION) == SR
    ]


def _evidence(session: Session, study_uid: str, input_keys: list[str]) -> list[Dataset]:
    """What the SR references of each input instance, from the index (no header read per input)."""
    keys = set(input_keys)
    out = []
    for instance, _series in study_instances(session, study_uid=study_uid):
        if instance.object_key in keys:
            ds = Dataset()
            ds.StudyInstanceUID = instance.study_uid
            ds.SeriesInstanceUID = instance.series_uid
            ds.SOPInstanceUID = instance.sop_uid
            ds.SOPClassUID = instance.sop_class_uid
            out.append(ds)
    return out


def _audit(session: Session, result: InferenceResult, entity: str, outcome: Outcome, detail: dict[str, str]) -> None:
    # DCM 110110 Patient Record, create: the SR is a new record of the patient, as the report is.
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


def queue_sr_exports(session: Session, objects: ObjectStore, *, result: InferenceResult, study: Study) -> int:
    """Build, store and queue the result's SR for each SR destination; returns how many forwards were queued.

    Raises storage.errors.StorageUnavailable when the object store cannot read the input's header
    or take the SR (retriable: the whole result is tried again). A header the SR cannot be made
    from is audited as a serious failure and sends nothing; the report is stored all the same.
    """
    targets = sr_destinations(session)
    if not targets or not result.input_keys:
        return 0
    # highdicom (the "imaging" extra) is loaded only where a destination wants SRs.
    from results.sr import sr_uids, structured_report

    created = result.finished_at or result.occurred_at
    try:
        header = read_header(objects, result.input_keys[0])
        sr = structured_report(result, header, _evidence(session, study.study_uid, result.input_keys), created=created)
    except (InvalidDicomError, ValueError, TypeError, AttributeError, KeyError, EOFError, struct.error) as exc:
        # The header was stored, so it parsed once; what highdicom refuses in it will not change on a retry.
        _, sop_uid = sr_uids(result.job_id)
        _audit(session, result, sop_uid, Outcome.SERIOUS_FAILURE, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        log.warning("no SR for job %s of study %s: %s", result.job_id, study.study_uid, exc)
        return 0
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)  # with the File Meta Information, as instances are stored
    key = dicom_key(study.study_uid, str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID))
    objects.put_bytes(key, buffer.getvalue(), content_type="application/dicom")
    item = ForwardItem(str(sr.SOPInstanceUID), key, str(sr.SOPClassUID), str(sr.file_meta.TransferSyntaxUID))
    queued = []
    for target in targets:
        row = queue_forward(
            session,
            destination_id=target.id,
            study_uid=study.study_uid,
            revision=result.revision,
            correlation_id=correlation_id_for_study(study.study_uid),
            rule="",
            instances=[item],
            job_id=result.job_id,
        )
        if row is not None:
            queued.append(target.name)
    _audit(
        session,
        result,
        str(sr.SOPInstanceUID),
        Outcome.SUCCESS,
        {
            "object_key": key,
            "sop_class_uid": str(sr.SOPClassUID),
            "series_uid": str(sr.SeriesInstanceUID),
            "destinations": ",".join(queued),
        },
    )
    return len(queued)
