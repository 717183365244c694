"""HL7 v2 -> FHIR R4, field choices after the HL7 v2-to-FHIR mapping guide (build.fhir.org/ig/HL7/v2-to-fhir).

PID -> Patient, PV1 -> Encounter, ORC/OBR (+ OMI's IPC) -> ServiceRequest, MRG -> Patient.link,
ORU's OBR/OBX -> DiagnosticReport/Observation (hl7_listener.reports). Pure: the database side is
hl7_listener.intake. Every populated field not read here ends up in the unmapped report.
"""

from dataclasses import dataclass
from typing import Any

from storage import fhir
from integration.errors import MappingFailed, UnknownCode, ValueTooLong
from integration.hl7v2 import Parsed, Segment
from hl7_listener.fields import Usage, coding, entity_id, hashed_id, person_name
from storage.fhir.systems import ASSIGNER_SYSTEM, PATIENT_ID_SYSTEM, V2_0203_SYSTEM
from storage.fhir.references import patient_resource_id
from storage.tables.hl7 import Order

V2_0004_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0004"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# HL7 table 0001 -> FHIR AdministrativeGender (v2-to-FHIR ConceptMap AdministrativeSex).
_GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
# HL7 table 0200 name type -> HumanName.use.
_NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "B": "old"}
# HL7 table 0004 patient class -> v3 ActCode (v2-to-FHIR ConceptMap PatientClass).
_PATIENT_CLASS = {"E": "EMER", "I": "IMP", "O": "AMB", "P": "PRENC", "R": "IMP", "B": "IMP"}
# ORC-1 order control (table 0119) and ORC-5 order status (table 0038) -> ServiceRequest.status.
_CANCELLING = ("CA", "OC", "CR", "DC", "OD", "DR", "OR")
_CONTROL = {"NW": "active", "XO": "active", "XX": "active", "RL": "active", "HD": "on-hold", "OH": "on-hold"}
_ORDER_STATUS = {
    "A": "active", "IP": "active", "SC": "active", "CM": "completed", "CA": "revoked",
    "DC": "revoked", "RP": "revoked", "HD": "on-hold", "ER": "entered-in-error",
}
_PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "urgent", "T": "urgent"}
# MSH fields the intake itself uses (envelope: who, what, which id, how to answer).
_ENVELOPE = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 15, 16, 18)


@dataclass(frozen=True)
class OrderFacts:
    """What the orders table keeps of one ORC/OBR group."""

    service_request_id: str
    placer_number: str
    filler_number: str
    accession_number: str
    patient_id: str
    status: str
    order_control: str


@dataclass(frozen=True)
class Merge:
    """ADT^A40: `merged_id` was merged into `surviving_id` (both Patient ids)."""

    surviving_id: str
    merged_id: str
    merged_identifier: str
    surviving_identifier: str


@dataclass(frozen=True)
class Mapping:
    """Everything one message says, as FHIR resources and order facts, plus what it did not map."""

    patient: fhir.Patient
    patient_id: str  # PID-3's first identifier value, as DICOM's PatientID would carry it
    authoritative: bool  # ADT demographics replace a stored Patient; orders and results only create one
    resources: tuple[fhir.Resource, ...]
    orders: tuple[OrderFacts, ...]
    merges: tuple[Merge, ...]
    unmapped: dict[str, str]


def _identifier(u: Usage, seg: Segment, position: int, rep: int) -> fhir.Identifier | None:
    value = u.get(seg, position, 1, rep)
    if not value:
        return None
    # CX.4 assigning authority is an HD: namespace&universal id&universal id type.
    namespace, universal, kind = (u.subcomponent(seg, position, 4, n, rep) for n in (1, 2, 3))
    if universal and kind.upper() == "ISO":
        system = f"urn:oid:{universal}"
    elif namespace or universal:
        system = ASSIGNER_SYSTEM + (namespace or universal)
    else:
        system = None
    type_code = u.get(seg, position, 5, rep)
    id_type = fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0203_SYSTEM, code=type_code)]) if type_code else None
    return fhir.Identifier(system=system, value=value, type=id_type)


def _names(u: Usage, pid: Segment) -> list[fhir.HumanName]:
    names = []
    for rep in range(1, pid.repetitions(5) + 1):
        family = u.subcomponent(pid, 5, 1, 1, rep)  # XPN.1 is an FN: its surname first
        given = [g for g in (u.get(pid, 5, 2, rep), u.get(pid, 5, 3, rep)) if g]
        suffix, prefix, use = u.get(pid, 5, 4, rep), u.get(pid, 5, 5, rep), u.get(pid, 5, 7, rep)
        if family or given:
            names.append(
                fhir.HumanName(
                    family=family or None,
                    given=[*given] or None,
                    suffix=[suffix] if suffix else None,
                    prefix=[prefix] if prefix else None,
                    use=_NAME_USE.get(use.upper()),
                )
            )
    return names


def _addresses(u: Usage, pid: Segment) -> list[fhir.Address]:
    out = []
    for rep in range(1, pid.repetitions(11) + 1):
        lines = [x for x in (u.get(pid, 11, 1, rep), u.get(pid, 11, 2, rep)) if x]
        city, state, postal, country = (u.get(pid, 11, c, rep) for c in (3, 4, 5, 6))
        if lines or city or postal:
            out.append(
                fhir.Address(
                    line=[*lines] or None, city=city or None, state=state or None,
                    postalCode=postal or None, country=country or None,
                )
            )
    return out


def _telecoms(u: Usage, pid: Segment) -> list[fhir.ContactPoint]:
    out = []
    for position, use in ((13, "home"), (14, "work")):
        for rep in range(1, pid.repetitions(position) + 1):
            phone = u.get(pid, position, 1, rep) or u.get(pid, position, 12, rep)
            email = u.get(pid, position, 4, rep)
            if phone:
                out.append(fhir.ContactPoint(system="phone", value=phone, use=use))
            if email:
                out.append(fhir.ContactPoint(system="email", value=email, use=use))
    return out


def patient(u: Usage, pid: Segment) -> tuple[fhir.Patient, str]:
    """PID -> Patient; its id is PID-3's first value through the same rule as a DICOM PatientID."""
    u.get(pid, 1)  # set id: structure only
    identifiers = [i for rep in range(1, pid.repetitions(3) + 1) if (i := _identifier(u, pid, 3, rep))]
    # v2.3 senders still put the patient id in PID-2 (external id), retained for backward compatibility.
    primary = identifiers[0].value if identifiers else u.get(pid, 2)
    if not primary:
        raise MappingFailed("PID-3 (patient identifier list) is empty", location=("PID", pid.occurrence, 3))
    _kept(primary, Order.patient_id, "the patient identifier (PID-3)", ("PID", pid.occurrence, 3))
    # The identifier the DICOM side gives the same patient, so both find one Patient.
    identifiers.append(fhir.Identifier(system=PATIENT_ID_SYSTEM, value=primary))
    death_flag = u.get(pid, 30).upper()
    resource = fhir.Patient(
        id=patient_resource_id(primary),
        identifier=identifiers,
        name=_names(u, pid) or None,
        birthDate=u.date(pid, 7),
        gender=_GENDER.get(u.get(pid, 8).upper()),
        address=_addresses(u, pid) or None,
        telecom=_telecoms(u, pid) or None,
        deceasedDateTime=u.datetime(pid, 29),
        deceasedBoolean=True if death_flag == "Y" and not pid.value(29) else None,
    )
    return resource, primary


def _patient_class(code: str) -> fhir.Coding:
    if code in _PATIENT_CLASS:
        return fhir.Coding(system=ACT_CODE_SYSTEM, code=_PATIENT_CLASS[code])
    return fhir.Coding(system=V2_0004_SYSTEM, code=code)


def encounter(u: Usage, pv1: Segment, patient_ref: str, sender: str) -> fhir.Encounter | None:
    """PV1 -> Encounter (class, visit number, location, attending doctor, admit/discharge times)."""
    u.get(pv1, 1)
    patient_class = u.get(pv1, 2).upper()
    if patient_class in ("", "N"):  # N: not applicable (e.g. the placeholder PV1 of an A31)
        return None
    visit = u.get(pv1, 19)
    start, end = u.datetime(pv1, 44), u.datetime(pv1, 45)
    location = " ".join(p for p in (u.get(pv1, 3, c) for c in (1, 2, 3, 4)) if p)
    doctor = person_name(u, pv1, 7, xcn=True)
    # `class` is a Python keyword: the model takes it by its FHIR name.
    visit_class: dict[str, Any] = {"class": _patient_class(patient_class)}
    return fhir.Encounter(
        id=hashed_id("enc-", sender, visit or patient_ref, "" if visit else (start or "")),
        identifier=[fhir.Identifier(value=visit, type=fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0203_SYSTEM, code="VN")]))]
        if visit
        else None,
        status="finished" if end else "in-progress",
        **visit_class,
        subject=fhir.Reference(reference=patient_ref),
        period=fhir.Period(start=start, end=end) if start or end else None,
        location=[fhir.EncounterLocation(location=fhir.Reference(display=location))] if location else None,
        participant=[fhir.EncounterParticipant(individual=fhir.Reference(display=doctor))] if doctor else None,
    )


def _order_status(control: str, order_status: str) -> str:
    if control in _CANCELLING:
        return "revoked"
    if order_status in _ORDER_STATUS:
        return _ORDER_STATUS[order_status]
    return _CONTROL.get(control, "active")


def _kept(value: str, column: Any, what: str, location: tuple[str, int, int]) -> str:
    """`value`, unless it is longer than its column in the orders table: then ValueTooLong (AE, ERR
    102), not a database error. Identifiers are never cut: a cut one could link the wrong study."""
    if len(value) > column.type.length:
        raise ValueTooLong(f"{what} is longer than {column.type.length} characters", location=location)
    return value


def service_request_id(namespace: str, number: str) -> str:
    """ServiceRequest.id of an order: stable for every message about it (new, status change, cancel)."""
    return hashed_id("sr-", namespace, number)


def order_id(u: Usage, orc: Segment | None, obr: Segment | None) -> tuple[str, str, str]:
    """(ServiceRequest id, placer number, filler number) of an ORC/OBR pair, ORC first (v2.5 4.5.1)."""
    # OBR-2/OBR-3 repeat ORC-2/ORC-3 (v2.5 4.5.3.2): both are read, ORC wins when valued.
    orc_placer, orc_filler = (entity_id(u, orc, 2), entity_id(u, orc, 3)) if orc else ("", "")
    obr_placer, obr_filler = (entity_id(u, obr, 2), entity_id(u, obr, 3)) if obr else ("", "")
    placer = _kept(orc_placer or obr_placer, Order.placer_number, "the placer order number", ("ORC", 1, 2))
    filler = _kept(orc_filler or obr_filler, Order.filler_number, "the filler order number", ("ORC", 1, 3))
    sender = u.parsed.header.sending_application
    if placer:
        number, _, namespace = placer.partition("^")
        return service_request_id(namespace.split("^")[0] or sender, number), placer, filler
    if filler:
        number, _, namespace = filler.partition("^")
        return service_request_id("filler:" + (namespace.split("^")[0] or sender), number), placer, filler
    raise MappingFailed("the order has neither a placer (ORC-2) nor a filler (ORC-3) number", location=("ORC", 1, 2))


def service_request(
    u: Usage, orc: Segment | None, obr: Segment | None, ipc: Segment | None, *, patient_ref: str, patient_id: str,
    encounter_ref: str | None,
) -> tuple[fhir.ServiceRequest, OrderFacts]:
    """ORC + OBR (+ IPC for OMI^O23) -> ServiceRequest and the order facts the study link needs."""
    sr_id, placer, filler = order_id(u, orc, obr)
    control = u.get(orc, 1).upper() if orc else "NW"
    if len(control) > 2:  # table 0119's codes are two letters; a longer value is none of them
        raise UnknownCode(f"ORC-1 {control[:20]!r} is not an order control code (HL7 table 0119)", location=("ORC", 1, 1))
    status = _order_status(control, u.get(orc, 5).upper() if orc else "")
    # The accession number: IPC-1 (OMI), else OBR-18 (IHE RAD placer field 1), else ORC-3's entity id.
    accession = (u.get(ipc, 1) if ipc else "") or (u.get(obr, 18) if obr else "") or filler.split("^")[0]
    accession = _kept(accession, Order.accession_number, "the accession number", ("OBR", 1, 18))
    identifiers = [
        fhir.Identifier(value=v.split("^")[0], type=fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0203_SYSTEM, code=t)]))
        for v, t in ((placer, "PLAC"), (filler, "FILL"), (accession, "ACSN"))
        if v
    ]
    if obr:
        u.get(obr, 1)
    requester = (person_name(u, orc, 12, xcn=True) if orc else "") or (person_name(u, obr, 16, xcn=True) if obr else "")
    priority = (u.get(obr, 27, 6) if obr else "") or (u.get(orc, 7, 6) if orc else "")
    reasons = [c for rep in range(1, (obr.repetitions(31) if obr else 0) + 1) if obr and (c := coding(u, obr, 31, rep))]
    request = fhir.ServiceRequest(
        id=sr_id,
        identifier=identifiers or None,
        status=status,
        intent="order",
        priority=_PRIORITY.get(priority.upper()),
        code=coding(u, obr, 4) if obr else None,
        subject=fhir.Reference(reference=patient_ref),
        encounter=fhir.Reference(reference=encounter_ref) if encounter_ref else None,
        authoredOn=u.datetime(orc, 9) if orc else None,
        requester=fhir.Reference(display=requester) if requester else None,
        reasonCode=reasons or None,
    )
    facts = OrderFacts(
        service_request_id=sr_id,
        placer_number=placer,
        filler_number=filler,
        accession_number=accession,
        patient_id=patient_id,
        status=status,
        order_control=control,
    )
    return request, facts


def merges(u: Usage, parsed: Parsed, surviving: list[tuple[Segment, str]]) -> list[Merge]:
    """ADT^A40: each PID's following MRG names the patient merged into it (MRG-1, v2.5 3.4.5)."""
    out = []
    for pid, surviving_value in surviving:
        mrg = next((s for s in parsed.segments if s.name == "MRG" and s.occurrence == pid.occurrence), None)
        merged_value = u.get(mrg, 1) if mrg else ""
        if not merged_value:
            raise MappingFailed("ADT^A40 without MRG-1 (prior patient identifier)", location=("MRG", pid.occurrence, 1))
        out.append(
            Merge(patient_resource_id(surviving_value), patient_resource_id(merged_value), merged_value, surviving_value)
        )
    return out


def envelope(u: Usage, parsed: Parsed) -> None:
    """Mark the MSH fields the intake uses and the EVN event type echo as read."""
    msh = parsed.first("MSH")
    if msh is not None:
        for position in _ENVELOPE:
            u.whole(msh, position)
    for evn in parsed.all("EVN"):
        u.get(evn, 1)
