"""ORU^R01 from other systems -> DiagnosticReport + Observations (v2-to-FHIR: OBR -> DiagnosticReport,
OBX -> Observation, NTE after an OBX -> Observation.note).

Groups are found by segment order (ORC? OBR {OBX NTE*}*), as hl7apy is run without find_groups.
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from storage import fhir
from integration.hl7v2 import Segment
from hl7_listener.fields import Usage, coding, entity_id, hashed_id
from hl7_listener.mapping import order_id
from storage.fhir.systems import UCUM_SYSTEM, V2_0074_SYSTEM, V2_0203_SYSTEM

V2_0078_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0078"
# OBR-25 result status (table 0123) -> DiagnosticReport.status.
_REPORT_STATUS = {
    "O": "registered", "I": "registered", "S": "registered", "A": "partial", "R": "partial",
    "P": "preliminary", "F": "final", "C": "corrected", "X": "cancelled",
}
# OBX-11 observation result status (table 0085) -> Observation.status.
_OBSERVATION_STATUS = {
    "C": "corrected", "D": "entered-in-error", "F": "final", "I": "registered", "O": "registered",
    "P": "preliminary", "R": "preliminary", "S": "preliminary", "U": "final", "W": "entered-in-error",
    "X": "cancelled", "N": "cancelled",
}


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _value(u: Usage, obx: Segment) -> dict[str, object]:
    """Observation.value[x] from OBX-2 (value type, table 0125) and OBX-5 (and OBX-6 units)."""
    kind = u.get(obx, 2).upper()
    reps = obx.repetitions(5)
    if kind in ("CE", "CWE", "CNE") and (concept := coding(u, obx, 5)):
        return {"valueCodeableConcept": concept}
    if kind == "NM" and reps == 1 and (number := _decimal(u.get(obx, 5))) is not None:
        return {"valueQuantity": _quantity(u, obx, number)}
    if kind == "SN" and reps == 1 and not u.get(obx, 5, 1) and not u.get(obx, 5, 3):
        number = _decimal(u.get(obx, 5, 2))
        if number is not None:
            return {"valueQuantity": _quantity(u, obx, number)}
    if kind in ("TS", "DT", "DTM") and reps == 1 and (moment := u.datetime(obx, 5)):
        return {"valueDateTime": moment}
    # Text (ST, TX, FT) and anything else: the repetitions as lines, components as sent.
    u.whole(obx, 5)
    component = u.parsed.header.encoding[0]
    lines = [component.join(c for c in comps).strip(component) for comps in obx.fields[4]] if len(obx.fields) > 4 else []
    text = "\n".join(line for line in lines if line)
    return {"valueString": text} if text else {}


def _quantity(u: Usage, obx: Segment, number: Decimal) -> fhir.Quantity:
    unit_code, unit_text, unit_system = u.get(obx, 6, 1), u.get(obx, 6, 2), u.get(obx, 6, 3)
    ucum = unit_system.upper() in ("UCUM", "ANS+")
    return fhir.Quantity(
        value=number,
        unit=unit_text or unit_code or None,
        system=UCUM_SYSTEM if ucum and unit_code else None,
        code=unit_code if ucum and unit_code else None,
    )


def _observation(
    u: Usage, obx: Segment, notes: list[Segment], *, obs_id: str, patient_ref: str, encounter_ref: str | None
) -> fhir.Observation:
    u.get(obx, 1)
    flags = [u.get(obx, 8, 1, rep) for rep in range(1, obx.repetitions(8) + 1)]
    reference_range = u.get(obx, 7)
    note_texts = []
    for nte in notes:
        u.get(nte, 1)
        note_texts += [u.get(nte, 3, 1, rep) for rep in range(1, nte.repetitions(3) + 1)]
    return fhir.Observation(
        id=obs_id,
        status=_OBSERVATION_STATUS.get(u.get(obx, 11).upper(), "unknown"),
        code=coding(u, obx, 3) or fhir.CodeableConcept(text="unknown"),
        subject=fhir.Reference(reference=patient_ref),
        encounter=fhir.Reference(reference=encounter_ref) if encounter_ref else None,
        effectiveDateTime=u.datetime(obx, 14),
        interpretation=[
            fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0078_SYSTEM, code=f)]) for f in flags if f
        ]
        or None,
        referenceRange=[fhir.ObservationReferenceRange(text=reference_range)] if reference_range else None,
        note=[fhir.Annotation(text=t) for t in note_texts if t] or None,
        **_value(u, obx),  # type: ignore[arg-type]
    )


def reports(
    u: Usage, segments: list[Segment], *, patient_ref: str, encounter_ref: str | None
) -> list[tuple[fhir.DiagnosticReport, list[fhir.Observation]]]:
    """One DiagnosticReport per OBR with the Observations of its OBX segments.

    `basedOn` names the ServiceRequest the order numbers lead to; the intake drops it when no
    such order is stored.
    """
    out: list[tuple[fhir.DiagnosticReport, list[fhir.Observation]]] = []
    orc: Segment | None = None
    index = 0
    while index < len(segments):
        seg = segments[index]
        index += 1
        if seg.name == "ORC":
            orc = seg
            continue
        if seg.name != "OBR":
            continue
        group: list[tuple[Segment, list[Segment]]] = []
        while index < len(segments) and segments[index].name in ("OBX", "NTE"):
            if segments[index].name == "OBX":
                group.append((segments[index], []))
            elif group:
                group[-1][1].append(segments[index])
            index += 1
        out.append(_report(u, orc, seg, group, patient_ref=patient_ref, encounter_ref=encounter_ref))
        orc = None
    return out


def _report(
    u: Usage,
    orc: Segment | None,
    obr: Segment,
    group: list[tuple[Segment, list[Segment]]],
    *,
    patient_ref: str,
    encounter_ref: str | None,
) -> tuple[fhir.DiagnosticReport, list[fhir.Observation]]:
    u.get(obr, 1)
    sr_id, placer, filler = order_id(u, orc, obr)
    header = u.parsed.header
    report_id = hashed_id("v2dr-", header.sending_application, header.sending_facility, filler or placer)
    observations = [
        _observation(u, obx, notes, obs_id=f"{report_id[:56]}-{n}", patient_ref=patient_ref, encounter_ref=encounter_ref)
        for n, (obx, notes) in enumerate(group, start=1)
    ]
    section = u.get(obr, 24)
    identifiers = [
        fhir.Identifier(
            value=v.split("^")[0], type=fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0203_SYSTEM, code=t)])
        )
        for v, t in ((placer, "PLAC"), (filler, "FILL"))
        if v
    ]
    if orc is not None:
        entity_id(u, orc, 2)
        entity_id(u, orc, 3)
        u.get(orc, 1)  # RE: "observations to follow", the ORU's only order control
    report = fhir.DiagnosticReport(
        id=report_id,
        identifier=identifiers or None,
        basedOn=[fhir.Reference(reference=f"ServiceRequest/{sr_id}")],
        status=_REPORT_STATUS.get(u.get(obr, 25).upper(), "unknown"),
        category=[fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0074_SYSTEM, code=section)])] if section else None,
        code=coding(u, obr, 4) or fhir.CodeableConcept(text="unknown"),
        subject=fhir.Reference(reference=patient_ref),
        encounter=fhir.Reference(reference=encounter_ref) if encounter_ref else None,
        effectiveDateTime=u.datetime(obr, 7),
        issued=_instant(u, obr, 22),
        result=[fhir.Reference(reference=f"Observation/{o.id}") for o in observations] or None,
    )
    return report, observations


def _instant(u: Usage, seg: Segment, position: int) -> Any:
    # DiagnosticReport.issued is an instant: only a time with an offset can fill it.
    moment = u.datetime(seg, position)
    if moment is None or "T" not in moment:
        u.used.discard((seg.name, seg.occurrence, position, 1, 1))
        return None
    return moment
