"""The HTTP API (FHIR R4 at /fhir, health, metrics) and the consumer that fills its FHIR store."""
