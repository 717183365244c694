"""Which segments each accepted message type maps, and into what (see hl7_listener.mapping)."""

from pydantic import ValidationError

from storage import fhir
from integration.errors import MappingFailed
from integration.hl7v2 import Parsed, Segment
from hl7_listener.fields import Usage
from hl7_listener.mapping import Mapping, OrderFacts, encounter, envelope, merges, patient, service_request
from hl7_listener.reports import reports

# ADT events whose PID is the patient's demographics of record (create or replace).
_DEMOGRAPHIC_EVENTS = ("A01", "A04", "A08", "A31")


def _pid(parsed: Parsed) -> Segment:
    pid = parsed.first("PID")
    if pid is None:
        raise MappingFailed("the message has no PID segment", location=("PID", 1, 0))
    return pid


def _orders(
    u: Usage, parsed: Parsed, *, patient_ref: str, patient_id: str, encounter_ref: str | None
) -> tuple[list[fhir.Resource], list[OrderFacts]]:
    """Each ORC with the OBR (and OMI's IPC segments) that follow it, in order (v2.5 4.4.1, 4.4.8)."""
    resources: list[fhir.Resource] = []
    facts: list[OrderFacts] = []
    segments = list(parsed.segments)
    for i, orc in enumerate(segments):
        if orc.name != "ORC":
            continue
        following = []
        for seg in segments[i + 1 :]:
            if seg.name == "ORC":
                break
            following.append(seg)
        obr = next((s for s in following if s.name == "OBR"), None)
        ipc = next((s for s in following if s.name == "IPC"), None)
        request, order = service_request(
            u, orc, obr, ipc, patient_ref=patient_ref, patient_id=patient_id, encounter_ref=encounter_ref
        )
        resources.append(request)
        facts.append(order)
    if not facts:
        raise MappingFailed("the order message has no ORC segment", location=("ORC", 1, 0))
    return resources, facts


def map_message(parsed: Parsed) -> Mapping:
    """Map an accepted message (ADT, ORM^O01, OMI^O23, ORU^R01) to FHIR resources and order facts.

    Raises MappingFailed when the message lacks what the mapping needs or a value cannot be a FHIR one.
    """
    try:
        return _map(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MappingFailed(f"a value cannot be represented in FHIR ({where}: {first['msg']})") from exc


def _map(parsed: Parsed) -> Mapping:
    u = Usage(parsed)
    envelope(u, parsed)
    header = parsed.header
    pid = _pid(parsed)
    resource, patient_id = patient(u, pid)
    patient_ref = f"Patient/{resource.id}"
    sender = f"{header.sending_application}|{header.sending_facility}"
    resources: list[fhir.Resource] = []
    pv1 = parsed.first("PV1")
    visit = encounter(u, pv1, patient_ref, sender) if pv1 is not None else None
    if visit is not None:
        resources.append(visit)
    encounter_ref = f"Encounter/{visit.id}" if visit is not None else None
    orders: list[OrderFacts] = []
    merged = []
    if header.message_type == "ADT" and header.trigger_event == "A40":
        pairs = [(pid, patient_id)]
        for extra in parsed.all("PID")[1:]:
            pairs.append((extra, patient(u, extra)[1]))
        merged = merges(u, parsed, pairs)
    elif header.message_type in ("ORM", "OMI"):
        found, orders = _orders(u, parsed, patient_ref=patient_ref, patient_id=patient_id, encounter_ref=encounter_ref)
        resources += found
    elif header.message_type == "ORU":
        for report, observations in reports(u, list(parsed.segments), patient_ref=patient_ref, encounter_ref=encounter_ref):
            resources += [*observations, report]
    return Mapping(
        patient=resource,
        patient_id=patient_id,
        authoritative=header.message_type == "ADT" and header.trigger_event in _DEMOGRAPHIC_EVENTS,
        resources=tuple(resources),
        orders=tuple(orders),
        merges=tuple(merged),
        unmapped=u.unmapped(),
    )
