"""A new report queued for every enabled FHIR server and webhook, in the transaction that stores it.

FHIR servers get a transaction Bundle (FHIR R4 http.html#transaction) that POSTs the
DiagnosticReport and its Observations, each as a conditional create on its identifier
(`ifNoneExist`, http.html#ccreate): a retried or replayed delivery finds what the first one made
instead of adding copies. References the EHR cannot resolve (our Patient and ImagingStudy ids)
become logical references by identifier (references.html#logical); the report points at its
Observations by their bundle fullUrl, which the server rewrites to the ids it assigns.

Webhooks get a small JSON event: ids, the model, the conclusion and links, never the findings'
details (the receiver reads those from our FHIR API with its own token).
"""

import json
import uuid

from sqlalchemy.orm import Session

from storage import fhir
from storage.fhir.systems import DICOM_UID_SYSTEM, JOB_SYSTEM, PATIENT_ID_SYSTEM
from storage.fhir.references import study_resource_id
from integration.messages import InferenceResult
from storage.deliveries import queue_delivery
from storage.destinations import destinations
from storage.instances import correlation_id_for_study
from storage.tables.index import Study

# Observations made by a job: "<report id>-<n>" is unique per report version (our resource id).
OBSERVATION_SYSTEM = "urn:doctorai:observation"
EVENT_TYPE = "diagnostic-report.created"


def _full_url(key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'urn:doctorai:{key}')}"


def _logical(kind: str, system: str, value: str) -> fhir.Reference:
    return fhir.Reference(type=kind, identifier=fhir.Identifier(system=system, value=value))


def transaction(
    report: fhir.DiagnosticReport, observations: list[fhir.Observation], study: Study, *, job_id: str
) -> fhir.Bundle:
    """The transaction Bundle that creates the report and its Observations on another FHIR server, once."""
    patient = _logical("Patient", PATIENT_ID_SYSTEM, study.patient_id.strip()) if study.patient_id.strip() else None
    imaging = _logical("ImagingStudy", DICOM_UID_SYSTEM, f"urn:oid:{study.study_uid}")
    entries = []
    urls = {}
    for observation in observations:
        value = observation.id or ""
        urls[f"Observation/{value}"] = _full_url(f"Observation/{value}")
        copy = observation.model_copy(
            update={
                "id": None,
                "identifier": [
                    *(observation.identifier or []),
                    fhir.Identifier(system=OBSERVATION_SYSTEM, value=value),
                ],
                "subject": patient,
                "derivedFrom": [imaging],
                "focus": None,  # our own report ids, meaningless to the receiver
            }
        )
        entries.append(
            fhir.BundleEntry(
                fullUrl=urls[f"Observation/{value}"],
                resource=copy,
                request=fhir.BundleEntryRequest(
                    method="POST", url="Observation", ifNoneExist=f"identifier={OBSERVATION_SYSTEM}|{value}"
                ),
            )
        )
    exported = report.model_copy(
        update={
            "id": None,
            "subject": patient,
            "imagingStudy": [imaging],
            "basedOn": None,  # our ServiceRequest ids; the EHR knows its order by the accession number
            "result": [fhir.Reference(reference=urls.get(r.reference or "", r.reference)) for r in report.result or []]
            or None,
        }
    )
    entries.append(
        fhir.BundleEntry(
            fullUrl=_full_url(f"DiagnosticReport/{job_id}"),
            resource=exported,
            request=fhir.BundleEntryRequest(
                method="POST", url="DiagnosticReport", ifNoneExist=f"identifier={JOB_SYSTEM}|{job_id}"
            ),
        )
    )
    return fhir.Bundle(type="transaction", entry=entries)


def event(report: fhir.DiagnosticReport, result: InferenceResult, study: Study, *, base_url: str) -> str:
    """The webhook's JSON event for a stored report."""
    body = {
        "type": EVENT_TYPE,
        "report_id": report.id,
        "status": report.status,
        "study_uid": study.study_uid,
        "patient_id": study.patient_id,
        "accession_number": study.accession_number,
        "model": result.model,
        "model_version": result.model_version,
        "clinical_use": result.clinical_use,
        "conclusion": report.conclusion or "",
        "links": {
            "report": f"{base_url}/DiagnosticReport/{report.id}",
            "imaging_study": f"{base_url}/ImagingStudy/{study_resource_id(study.study_uid)}",
        },
    }
    return json.dumps(body, sort_keys=True)


def queue_report_exports(
    session: Session,
    *,
    report: fhir.DiagnosticReport,
    observations: list[fhir.Observation],
    result: InferenceResult,
    study: Study,
    base_url: str,
) -> int:
    """Queue the report for each enabled "fhir" and "webhook" destination; returns how many were queued.

    One delivery per destination and job: an amended report (a later revision's job) goes out
    again, a replayed result queues nothing new.
    """
    queued = 0
    subject = f"DiagnosticReport/{report.id}/job/{result.job_id}"
    correlation_id = correlation_id_for_study(study.study_uid)
    fhir_targets = destinations(session, kind="fhir", enabled_only=True)
    webhooks = destinations(session, kind="webhook", enabled_only=True)
    payloads = {}
    if fhir_targets:
        payloads["fhir"] = fhir.dump(transaction(report, observations, study, job_id=result.job_id))
    if webhooks:
        payloads["webhook"] = event(report, result, study, base_url=base_url)
    for target in [*fhir_targets, *webhooks]:
        row = queue_delivery(
            session,
            destination_id=target.id,
            correlation_id=correlation_id,
            subject=subject,
            control_id=result.job_id[:64],
            payload=payloads[target.kind],
        )
        queued += row is not None
    return queued
