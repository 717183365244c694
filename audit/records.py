"""Audit records shaped after FHIR AuditEvent (type, subtype, action, outcome, agent, entity).

Event types are the DICOM audit codes of PS3.16 CID 400 ("DCM" 1101xx) that IHE ATNA uses;
the subtype names our hop. Records hold identifiers only, never clinical content.
"""

from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    """FHIR AuditEvent.action (http://hl7.org/fhir/R4/valueset-audit-event-action.html)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(StrEnum):
    """FHIR AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure, 12 major failure."""

    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


@dataclass(frozen=True)
class Hop:
    """What kind of step a record is about: a DCM event type code plus our subtype."""

    type_code: str
    subtype: str
    action: Action


# DCM 110114 User Authenticated: a peer's association or token was accepted or refused.
ASSOCIATION_ACCEPTED = Hop("110114", "association-accepted", Action.EXECUTE)
ASSOCIATION_REJECTED = Hop("110114", "association-rejected", Action.EXECUTE)
ASSOCIATION_ABORTED = Hop("110114", "association-aborted", Action.EXECUTE)
# A bearer token issued to a client, or a token or client credentials that were refused.
TOKEN_ISSUED = Hop("110114", "token-issued", Action.EXECUTE)
AUTHENTICATION_FAILED = Hop("110114", "authentication-failed", Action.EXECUTE)
# Issue 16, people at the console: DCM 110114 User Authenticated (PS3.15 A.5.3.8), whose event type
# codes are 110122 Login and 110123 Logout; the code is in detail["event"]. A refused sign-in is a
# Login with a failure outcome; the account locked after too many is a record of its own.
USER_SIGNED_IN = Hop("110114", "user-signed-in", Action.EXECUTE)
USER_SIGN_IN_FAILED = Hop("110114", "user-sign-in-failed", Action.EXECUTE)
USER_LOCKED_OUT = Hop("110114", "user-locked-out", Action.EXECUTE)
USER_SIGNED_OUT = Hop("110114", "user-signed-out", Action.EXECUTE)
LOGIN = "110122"
LOGOUT = "110123"
# DCM 110104 DICOM Instances Transferred (PS3.15 A.5.3.2).
INSTANCE_STORED = Hop("110104", "instance-stored", Action.CREATE)
INSTANCE_REFUSED = Hop("110104", "instance-refused", Action.CREATE)
# DCM 110111 Procedure Record: a modality's performed procedure step (MPPS) started or changed.
PROCEDURE_STEP_CREATED = Hop("110111", "procedure-step-created", Action.CREATE)
PROCEDURE_STEP_UPDATED = Hop("110111", "procedure-step-updated", Action.UPDATE)
# DCM 110100 Application Activity: the engine's own pipeline steps.
STUDY_READY = Hop("110100", "study-ready", Action.EXECUTE)
STUDY_ROUTED = Hop("110100", "study-routed", Action.EXECUTE)
INFERENCE_RUN = Hop("110100", "inference-run", Action.EXECUTE)
# DCM 110110 Patient Record: reports and other FHIR resources created, read or changed.
REPORT_CREATED = Hop("110110", "report-created", Action.CREATE)
REPORT_AMENDED = Hop("110110", "report-amended", Action.UPDATE)
RESOURCE_READ = Hop("110110", "resource-read", Action.READ)
RESOURCE_CREATED = Hop("110110", "resource-created", Action.CREATE)
RESOURCE_UPDATED = Hop("110110", "resource-updated", Action.UPDATE)
RESOURCE_DELETED = Hop("110110", "resource-deleted", Action.DELETE)
# DCM 110101 Audit Log Used: someone read or searched the audit trail itself (IHE ATNA).
AUDIT_LOG_USED = Hop("110101", "audit-log-used", Action.READ)
# DCM 110112 Query: a FHIR search (FHIR marks searches with action E).
RESOURCE_SEARCHED = Hop("110112", "resource-searched", Action.EXECUTE)
# Issue 4, HL7 v2: DCM 110107 Import (a message taken in or refused) and 110106 Export (an ORU^R01
# sent), with the actions IHE ATNA gives them (Import C, Export R).
HL7_ACCEPTED = Hop("110107", "hl7-accepted", Action.CREATE)
HL7_REJECTED = Hop("110107", "hl7-rejected", Action.CREATE)
HL7_SENT = Hop("110106", "hl7-sent", Action.READ)
# Issue 7, the admin API. A configuration change (peers, destinations, rules, models) is a DCM
# 110113 Security Alert (PS3.15 A.5.3.11) whose alert type (PS3.16 CID 403) is 110128 Network
# Configuration or 110131 Software Configuration; a change to an API client's credentials or scopes
# is 110137 User Security Attributes Changed. The record's detail names the alert type. Operating
# on the pipeline (releasing or reprocessing a study, replaying or discarding dead letters) is DCM
# 110100 Application Activity (PS3.15 A.5.3.1). A.5.3.11 makes a Security Alert's action E
# (Execute); whether it created, changed or removed something is in detail["method"].
ADMIN_CONFIGURATION = Hop("110113", "admin-configuration", Action.EXECUTE)
ADMIN_SECURITY = Hop("110113", "admin-security", Action.EXECUTE)
ADMIN_OPERATION = Hop("110100", "admin-operation", Action.EXECUTE)
# Issue 16: a person read what a message carried (a dead letter's payload, a raw HL7 message):
# DCM 110110 Patient Record, action R, as a FHIR read is.
ADMIN_INSPECTION = Hop("110110", "admin-inspection", Action.READ)
# A message a consumer gave up on, stored from the dlq topic for the admin to replay or discard.
DEAD_LETTERED = Hop("110100", "dead-lettered", Action.EXECUTE)
# PS3.16 CID 403 Security Alert Type codes the admin records name in detail["alert_type"].
NETWORK_CONFIGURATION = "110128"
SOFTWARE_CONFIGURATION = "110131"
USER_SECURITY_ATTRIBUTES_CHANGED = "110137"
# Issue 7: DCM 110106 Export of a study forwarded to a DICOM node (PS3.15 A.5.3.5), and of a
# report sent to a FHIR server or a webhook.
DICOM_SENT = Hop("110106", "dicom-sent", Action.READ)
REPORT_SENT = Hop("110106", "report-sent", Action.READ)
# Issue 18: a FHIR Subscription notification sent to its endpoint discloses the resource (Export).
NOTIFICATION_SENT = Hop("110106", "notification-sent", Action.READ)
# Issue 17, Query/Retrieve: DCM 110112 Query for a C-FIND or a QIDO-RS search (PS3.15 A.5.3.14),
# and DCM 110104 DICOM Instances Transferred, action R for the side that sends (A.5.3.2), for the
# instances a C-MOVE or C-GET sent. A refused request is recorded with a failure outcome.
DICOM_QUERIED = Hop("110112", "dicom-query", Action.EXECUTE)
INSTANCES_RETRIEVED = Hop("110104", "instances-retrieved", Action.READ)
# Storage Commitment (PS3.4 Annex J): a request taken, and its report sent. DCM 110100 Application
# Activity: the report only tells the requester what we hold of the instances it named.
COMMITMENT_REQUESTED = Hop("110100", "commitment-requested", Action.EXECUTE)
COMMITMENT_REPORTED = Hop("110100", "commitment-reported", Action.EXECUTE)
# Issue 17: DCM 110106 Export of instances, metadata, frames or bulk data a client retrieved by WADO-RS.
DICOMWEB_RETRIEVED = Hop("110106", "dicomweb-retrieved", Action.READ)


@dataclass(frozen=True)
class AuditRecord:
    """One record: which hop, who did it (and from where), on what, and how it ended."""

    hop: Hop
    correlation_id: str
    agent_who: str
    entity_what: str
    outcome: Outcome = Outcome.SUCCESS
    agent_address: str = ""
    detail: dict[str, str] = field(default_factory=dict)
