"""URIs of the code and identifier systems that more than one process writes or reads.

Our own systems are URNs under urn:doctorai; the others are the ones FHIR R4 names for
external terminologies (http://hl7.org/fhir/R4/terminologies-systems.html).
"""

# Identifier systems of our own.
PATIENT_ID_SYSTEM = "urn:doctorai:dicom-patient-id"
JOB_SYSTEM = "urn:doctorai:job"
# HL7 v2 assigning authorities (CX-4) as identifier systems: this prefix and the namespace id.
ASSIGNER_SYSTEM = "urn:doctorai:v2-assigning-authority:"
# DICOM UIDs as FHIR identifiers and codes (http://hl7.org/fhir/R4/imagingstudy.html#notes).
DICOM_UID_SYSTEM = "urn:dicom:uid"
URI_SYSTEM = "urn:ietf:rfc:3986"
# External terminologies.
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED_SYSTEM = "http://snomed.info/sct"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
UCUM_SYSTEM = "http://unitsofmeasure.org"
LOINC_SYSTEM = "http://loinc.org"
# HL7 v2 table 0074 Diagnostic Service Section ID, the code system FHIR DiagnosticReport.category uses.
V2_0074_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
