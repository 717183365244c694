"""Audit records as DICOM audit messages (PS3.15 Annex A.5, the IHE ATNA format).

The schema (PS3.15 A.5.1) requires EventIdentification (EventDateTime, EventOutcomeIndicator,
EventID), at least one ActiveParticipant (UserID, UserIsRequestor), AuditSourceIdentification
(AuditSourceID), and, per object, ParticipantObjectIdentification (ParticipantObjectID,
ParticipantObjectIDTypeCode). Coded values use the attributes csd-code, codeSystemName and
originalText.
"""

import xml.etree.ElementTree as ET

from storage.tables.audit import AuditEvent

# PS3.16 CID 400 (Audit Event ID) display names of the codes audit.records uses.
EVENT_NAMES = {
    "110100": "Application Activity",
    "110101": "Audit Log Used",
    "110104": "DICOM Instances Transferred",
    "110106": "Export",
    "110107": "Import",
    "110110": "Patient Record",
    "110112": "Query",
    "110113": "Security Alert",
    "110114": "User Authenticated",
}
SUBTYPE_SYSTEM = "urn:doctorai:audit-subtype"


def _code(parent: ET.Element, tag: str, code: str, system: str, text: str) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": system, "originalText": text})


def _object(parent: ET.Element, object_id: str, *, study: bool) -> None:
    # Type 2 "System Object"; a study UID is DCM 110180, anything else an RFC 3881 URI (12).
    attrs = {"ParticipantObjectID": object_id, "ParticipantObjectTypeCode": "2"}
    if study:
        attrs["ParticipantObjectTypeCodeRole"] = "3"  # Report (RFC 3881 role 3)
    element = ET.SubElement(parent, "ParticipantObjectIdentification", attrs)
    if study:
        _code(element, "ParticipantObjectIDTypeCode", "110180", "DCM", "Study Instance UID")
    else:
        _code(element, "ParticipantObjectIDTypeCode", "12", "RFC-3881", "URI")


def to_atna_xml(row: AuditEvent, *, source_id: str, enterprise_site_id: str = "") -> bytes:
    """One audit record as an AuditMessage document (UTF-8, no PHI: identifiers only)."""
    message = ET.Element("AuditMessage")
    event = ET.SubElement(
        message,
        "EventIdentification",
        {
            "EventActionCode": row.action,
            "EventDateTime": row.recorded_at.isoformat(),
            "EventOutcomeIndicator": row.outcome,
        },
    )
    _code(event, "EventID", row.type_code, "DCM", EVENT_NAMES.get(row.type_code, row.type_code))
    _code(event, "EventTypeCode", row.subtype, SUBTYPE_SYSTEM, row.subtype)
    requestor = {"UserID": row.agent_who, "UserIsRequestor": "true"}
    if row.agent_address:
        # NetworkAccessPointTypeCode 2: an IP address (RFC 3881 5.3.4).
        requestor |= {"NetworkAccessPointID": row.agent_address, "NetworkAccessPointTypeCode": "2"}
    ET.SubElement(message, "ActiveParticipant", requestor)
    ET.SubElement(message, "ActiveParticipant", {"UserID": source_id, "UserIsRequestor": "false"})
    source = ET.SubElement(message, "AuditSourceIdentification", {"AuditSourceID": source_id})
    if enterprise_site_id:
        source.set("AuditEnterpriseSiteID", enterprise_site_id)
    _code(source, "AuditSourceTypeCode", "4", "DCM", "Application Server Process")
    study_uid = row.detail.get("study_uid", "") if isinstance(row.detail, dict) else ""
    if study_uid:
        _object(message, study_uid, study=True)
    if row.entity_what and row.entity_what != study_uid:
        _object(message, row.entity_what, study=False)
    # The chain position travels with the record, so the collector's copy anchors the chain.
    _object(message, f"urn:doctorai:audit:{row.id}:{row.hash}", study=False)
    document: bytes = ET.tostring(message, encoding="utf-8", xml_declaration=True)
    return document
