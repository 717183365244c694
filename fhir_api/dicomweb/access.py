"""Who may use DICOMweb, and the record each retrieve leaves.

The FHIR API's bearer tokens and SMART scopes apply, with the imaging study as the resource:
retrieving (WADO-RS) needs `r` on ImagingStudy (system/ImagingStudy.rs or .r, system/*.rs),
searching (QIDO-RS) `s`, storing (STOW-RS) `c` (system/ImagingStudy.c, system/*.c).
"""

from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import DICOMWEB_RETRIEVED, AuditRecord, Outcome
from fhir_api.auth.tokens import Principal
from fhir_api.fhir.routes.read import require
from storage.instances import correlation_id_for_study

IMAGING = "ImagingStudy"


def require_imaging(principal: Principal, interaction: str) -> None:
    """Forbidden unless the token's scopes allow `interaction` (r, s or c) on ImagingStudy."""
    require(principal, IMAGING, interaction)


def audit_retrieve(
    session: Session, *, principal: Principal, address: str, study_uid: str, resource: str, instances: int, detail: dict[str, str]
) -> None:
    """A WADO-RS retrieve, under the study's correlation id (DCM 110106 Export: the data leaves us).

    `resource` says what was asked for (study, series, instance, metadata, frames, bulkdata);
    a retrieve that found nothing is recorded too, as a minor failure.
    """
    audit_log.append(
        session,
        AuditRecord(
            hop=DICOMWEB_RETRIEVED,
            correlation_id=correlation_id_for_study(study_uid),
            agent_who=principal.subject,
            agent_address=address,
            entity_what=study_uid,
            outcome=Outcome.SUCCESS if instances else Outcome.MINOR_FAILURE,
            detail={"resource": resource, "instances": str(instances), **detail},
        ),
    )
