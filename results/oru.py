"""AI results out as ORU^R01 v2.5.1 (HL7 v2.5.1 chapter 7.3.1), queued for every enabled MLLP destination.

One ORC/OBR per report, carrying the order's placer and filler numbers when the study was
ordered by HL7; per finding two OBX sharing a sub-id (OBX-4): the coded verdict (CWE, SNOMED CT
Detected/Not detected) and the probability (NM, UCUM "1"); then the conclusion (TX) and, while
the model is not validated, a "not for clinical use" OBX. Each message is built with hl7apy's
STRICT validation and validated as a whole before it is queued: an invalid one never leaves.
"""

import logging
import uuid
from datetime import UTC, date, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_segment
from sqlalchemy.orm import Session

from storage import fhir
from storage.fhir import store
from integration.config import Hl7Identity
from integration.hl7v2 import escape
from storage.fhir.systems import ASSIGNER_SYSTEM
from storage.fhir.references import patient_resource_id
from integration.messages import InferenceResult
from storage.deliveries import mark_failed, queue_delivery
from storage.destinations import destinations
from storage.orders import order_for_study
from storage.instances import correlation_id_for_study
from storage.tables.hl7 import Order
from storage.tables.index import Study

log = logging.getLogger(__name__)

VERSION = "2.5.1"
LOCAL_CODES = "99DOCTORAI"  # a local coding system name (HL7 table 0396: 99zzz)
_DETECTED = "260373001^Detected^SCT"
_NOT_DETECTED = "260415000^Not detected^SCT"


class InvalidOutbound(ValueError):
    """A message we built does not pass hl7apy's strict validation; it is not sent."""


def _ts(moment: date) -> str:
    """An HL7 v2 DTM: a date alone as YYYYMMDD (a DTM may stop at any precision, HL7 v2.5.1 2.A.22), a time in UTC."""
    if not isinstance(moment, datetime):
        return moment.strftime("%Y%m%d")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _ei(value: str) -> str:
    """An EI as stored ("number^namespace..."), each component escaped."""
    return "^".join(escape(part) for part in value.split("^"))


def _cwe(code: str, text: str, system: str) -> str:
    return f"{escape(code)}^{escape(text)}^{escape(system)}"


def _system_name(uri: str) -> str:
    return {"http://snomed.info/sct": "SCT", "http://loinc.org": "LN", "http://radlex.org": "RADLEX"}.get(uri, LOCAL_CODES)


def _pid(study: Study, patient: fhir.Patient | None) -> str:
    assigner = ""
    name = ""
    birth = ""
    sex = ""
    if patient is not None:
        systems = [i.system for i in patient.identifier or [] if i.value == study.patient_id and i.system]
        assigner = next((s.removeprefix(ASSIGNER_SYSTEM) for s in systems if s.startswith(ASSIGNER_SYSTEM)), "")
        if patient.name:
            first = patient.name[0]
            name = f"{escape(first.family or '')}^{escape((first.given or [''])[0] or '')}"
        birth = str(patient.birthDate or "").replace("-", "")
        sex = {"male": "M", "female": "F", "other": "O", "unknown": "U"}.get(str(patient.gender or ""), "")
    return f"PID|1||{escape(study.patient_id)}^^^{escape(assigner)}^MR||{name}||{birth}|{sex}"


def segments(
    report: fhir.DiagnosticReport, result: InferenceResult, study: Study, order: Order | None, patient: fhir.Patient | None,
) -> list[str]:
    """The PID, ORC, OBR and OBX segments of the ORU for one report (ER7, escaped)."""
    placer = _ei(order.placer_number) if order else ""
    filler = _ei(order.filler_number) if order and order.filler_number else f"{escape(result.job_id[:15])}^DOCTORAI"
    amended = report.status == "amended"
    status = "C" if amended else "P"
    code = result.report_code
    accession = escape(study.accession_number)
    # OBR-7 and OBX-14, the observation's date/time (HL7 v2.5.1 7.4.1.7, 7.4.2.14): when the study
    # was made, as the report's effectiveDateTime says; OBR-22, the result's status change: when
    # the report was issued.
    observed = _ts(report.effectiveDateTime or datetime.now(UTC))
    reported = _ts(report.issued or datetime.now(UTC))
    out = [
        _pid(study, patient),
        f"ORC|RE|{placer}|{filler}",
        f"OBR|1|{placer}|{filler}|{_cwe(code.code, code.display, _system_name(code.system))}|||{observed}"
        f"|||||||||||{accession}||||{reported}||RAD|{status}",
    ]
    n = 0
    for k, finding in enumerate(result.findings, start=1):
        concept = _cwe(finding.concept.code, finding.concept.display, _system_name(finding.concept.system))
        verdict, flag = (_DETECTED, "A") if finding.positive else (_NOT_DETECTED, "N")
        probability = f"{min(max(finding.probability, 0.0), 1.0):.4f}"
        out.append(f"OBX|{n + 1}|CWE|{concept}|{k}|{verdict}|||{flag}|||{status}|||{observed}")
        out.append(f"OBX|{n + 2}|NM|PROB^Probability^{LOCAL_CODES}|{k}|{probability}|1^^UCUM|||||{status}|||{observed}")
        n += 2
    if report.conclusion:
        out.append(f"OBX|{n + 1}|TX|18782-3^Radiology Study observation^LN||{escape(report.conclusion)}||||||{status}")
        n += 1
    if not result.clinical_use:
        note = f"NOT FOR CLINICAL USE: output of {result.model} {result.model_version}, a model this site has not validated."
        out.append(f"OBX|{n + 1}|TX|NFCU^Not for clinical use^{LOCAL_CODES}||{escape(note)}||||||{status}")
    return out


def build(
    body: list[str], *, control_id: str, settings: Hl7Identity, receiving_application: str, now: datetime | None = None
) -> str:
    """The whole ORU^R01 as ER7, assembled into hl7apy's groups and validated strictly."""
    strict = VALIDATION_LEVEL.STRICT
    msh = (
        f"MSH|^~\\&|{escape(settings.hl7_application)}|{escape(settings.hl7_facility)}|{escape(receiving_application)}|"
        f"|{_ts(now or datetime.now(UTC))}||ORU^R01^ORU_R01|{escape(control_id)}|P|{VERSION}"
    )
    try:
        message = Message("ORU_R01", version=VERSION, validation_level=strict)
        message.msh = parse_segment(msh, version=VERSION, validation_level=strict)
        result = message.add_group("ORU_R01_PATIENT_RESULT")
        patient = result.add_group("ORU_R01_PATIENT")
        order = result.add_group("ORU_R01_ORDER_OBSERVATION")
        for line in body:
            segment = parse_segment(line, version=VERSION, validation_level=strict)
            if segment.name == "PID":
                patient.add(segment)
            elif segment.name in ("ORC", "OBR"):
                order.add(segment)
            else:
                order.add_group("ORU_R01_OBSERVATION").add(segment)
        message.validate()
    except (HL7apyException, ValueError) as exc:  # hl7apy reports bad values as ValueError
        raise InvalidOutbound(f"ORU^R01 fails strict validation: {exc}") from exc
    return str(message.to_er7()) + "\r"


def queue_oru(
    session: Session, *, report: fhir.DiagnosticReport, result: InferenceResult, study: Study, settings: Hl7Identity
) -> int:
    """Queue the report's ORU^R01 for each enabled MLLP destination; returns how many were queued.

    A replayed result queues nothing new (a delivery is unique per destination and report version).
    """
    targets = destinations(session, kind="mllp", enabled_only=True)
    if not targets:
        return 0
    order = order_for_study(session, study=study)
    patient_id = patient_resource_id(study.patient_id, study_uid=study.study_uid)
    patient = store.read(session, "Patient", patient_id) if store.exists(session, "Patient", patient_id) else None
    body = segments(report, result, study, order, patient if isinstance(patient, fhir.Patient) else None)
    queued = 0
    for target in targets:
        control_id = "DAI" + uuid.uuid4().hex[:17]
        error = ""
        try:
            payload = build(body, control_id=control_id, settings=settings, receiving_application=target.name)
        except InvalidOutbound as exc:
            # Our bug, not the report's: the report stands, the delivery is dead-lettered and visible.
            log.error("ORU for report %s not sent to %s: %s", report.id, target.name, exc)
            payload, error = "", str(exc)
        row = queue_delivery(
            session,
            destination_id=target.id,
            correlation_id=correlation_id_for_study(study.study_uid),
            # Each report revision is its own DiagnosticReport (amended ones too): one delivery each.
            subject=f"DiagnosticReport/{report.id}",
            control_id=control_id,
            payload=payload,
        )
        if row is not None and error:
            mark_failed(session, delivery_id=row.id, error=error, ack_code="", retry_in=None)
        queued += row is not None and not error
    return queued
