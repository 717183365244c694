"""A report's SR, stored in its study (results/instances.py), queued for every enabled DICOM destination that takes results.

A "dicom" destination whose options hold `"results": "sr"` gets, for each job reported, the SR
built by results/sr.py, queued as a forward of kind "result" in the report's transaction
(storage/forwards.py). The forwarder sends it like a study's instances and audits the send
(DICOM_SENT).
"""

from sqlalchemy.orm import Session

from audit.records import Outcome
from integration.messages import InferenceResult
from results.instances import audit_sr
from storage.destinations import destinations
from storage.forwards import ForwardItem, queue_forward
from storage.instances import correlation_id_for_study
from storage.tables.index import Study
from storage.tables.outbound import Destination

RESULTS_OPTION = "results"
SR = "sr"


def sr_destinations(session: Session) -> list[Destination]:
    """The enabled DICOM destinations whose options ask for results as SR."""
    return [
        d for d in destinations(session, kind="dicom", enabled_only=True) if (d.options or {}).get(RESULTS_OPTION) == SR
    ]


def queue_sr_exports(session: Session, sr: ForwardItem, *, result: InferenceResult, study: Study) -> int:
    """Queue the stored SR for each SR destination and audit the SR's creation; returns how many forwards were queued."""
    queued = []
    for target in sr_destinations(session):
        row = queue_forward(
            session,
            destination_id=target.id,
            study_uid=study.study_uid,
            revision=result.revision,
            correlation_id=correlation_id_for_study(study.study_uid),
            rule="",
            instances=[sr],
            job_id=result.job_id,
        )
        if row is not None:
            queued.append(target.name)
    detail = {"object_key": sr.object_key, "sop_class_uid": sr.sop_class_uid, "destinations": ",".join(queued)}
    audit_sr(session, result, sr.sop_uid, Outcome.SUCCESS, detail)
    return len(queued)
