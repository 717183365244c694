"""Everything that crosses a process boundary: pydantic models with a schema version.

Messages carry references (UIDs, object keys), never pixel data or whole reports.
"""

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid() -> str:
    return str(uuid.uuid4())


class Event(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    event_id: str = Field(default_factory=_uuid)
    correlation_id: str
    occurred_at: datetime = Field(default_factory=_now)


class Coding(BaseModel):
    """A coded concept (SNOMED CT, LOINC, RadLex)."""

    model_config = ConfigDict(frozen=True)

    system: str
    code: str
    display: str


class InstanceRef(BaseModel):
    """One stored instance and the header fields routing looks at."""

    model_config = ConfigDict(frozen=True)

    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str = ""
    body_part: str = ""
    instance_number: int | None = None
    object_key: str


class StudyReady(Event):
    """A study (at `revision`) is complete enough to route."""

    study_uid: str
    revision: int
    # manual-release: an admin released a held study (the router skips hold rules); reprocess: an
    # admin asked for routing to run again on what is stored.
    reason: Literal["quiet-period", "count-reached", "manual-release", "reprocess"]
    patient_id: str = ""
    accession_number: str = ""
    calling_ae: str = ""
    last_received_at: datetime
    instances: list[InstanceRef]


class InferenceRequest(Event):
    """Run `model` at `model_version` on these inputs of one study revision."""

    job_id: str
    study_uid: str
    revision: int
    model: str
    model_version: str
    patient_id: str = ""
    inputs: list[InstanceRef]
    # When the study's last instance arrived, for end-to-end latency.
    last_received_at: datetime
    # Report text models read this instead of instances (issue 6).
    texts: list["TextInput"] = []
    # Issue 9: when the study became ready (StudyReady.occurred_at), for the latency stages.
    ready_at: datetime | None = None


class Finding(BaseModel):
    """One output label of a model, with its probability and the threshold decision."""

    model_config = ConfigDict(frozen=True)

    concept: Coding
    probability: float
    threshold: float
    positive: bool


class InferenceResult(Event):
    """What a model said about one study revision, or why it could not say anything."""

    job_id: str
    study_uid: str
    revision: int
    model: str
    model_version: str
    patient_id: str = ""
    input_keys: list[str]
    report_code: Coding
    report_category: Coding
    findings: list[Finding] = []
    # Until a site validates a model, every result is marked not for clinical use.
    clinical_use: bool = False
    error: str = ""
    timings: dict[str, float] = {}
    last_received_at: datetime
    # Issue 6: measured values, objects the model produced (a mask) and the FHIR resources the
    # result is about besides the study (the report whose text it read).
    measurements: list["Measurement"] = []
    output_keys: list[str] = []
    focus: list[str] = []
    # Issue 9: the latency stages (quiet period, queue, inference, report) of the end-to-end histogram.
    ready_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class DeadLetter(Event):
    """A message that could not be processed, with why."""

    source_topic: str
    partition: int
    offset: int
    key: str
    value: str
    error: str


class FhirReceived(Event):
    """A FHIR resource was created, updated or deleted through the FHIR API (topic fhir.received)."""

    resource_type: str
    resource_id: str
    version_id: int
    interaction: Literal["create", "update", "delete"]
    # The API client (token subject) that made the change.
    client_id: str = ""


class Hl7Received(Event):
    """An HL7 v2 message was stored, acknowledged and mapped (issue 4); its raw bytes are at `object_key`."""

    message_id: str
    sender_application: str
    sender_facility: str
    control_id: str
    message_type: str
    trigger_event: str
    version: str
    object_key: str
    patient_id: str = ""
    accession_numbers: list[str] = []
    # The FHIR resources the message created or changed, as "Type/id".
    resources: list[str] = []


# Issue 6: measurements, report text and the resources a result is about.


class Measurement(BaseModel):
    """A value a model measured, with its UCUM unit (e.g. total intracranial volume in cm3)."""

    model_config = ConfigDict(frozen=True)

    concept: Coding
    value: float
    # UCUM code (http://unitsofmeasure.org), as FHIR Quantity.code takes it.
    unit: str
    # What was measured, in words, when the concept alone is generic (SNOMED "Volume").
    text: str = ""


class TextInput(BaseModel):
    """Report text a model reads, with the FHIR reference of the resource it came from."""

    model_config = ConfigDict(frozen=True)

    ref: str
    text: str


InferenceRequest.model_rebuild()
InferenceResult.model_rebuild()
