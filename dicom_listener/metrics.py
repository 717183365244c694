"""Prometheus metrics of the DICOM listener (multiprocess-safe: see __main__ for several workers)."""

from prometheus_client import Counter, Gauge, Histogram

ASSOCIATIONS = Counter(
    "doctorai_dicom_associations_total", "Associations by outcome (accepted, rejected, aborted)", ["outcome"]
)
ACTIVE_ASSOCIATIONS = Gauge(
    "doctorai_dicom_active_associations", "Associations open now, over every listener process", multiprocess_mode="livesum"
)
INSTANCES = Counter(
    "doctorai_dicom_instances_received_total",
    "C-STORE requests by outcome (success, duplicate, duplicate-kept-first, new-version, duplicate-refused, "
    "cannot-understand, out-of-resources)",
    ["status"],
)
BYTES = Counter("doctorai_dicom_received_bytes_total", "Bytes of instances received and acknowledged")
STORE_SECONDS = Histogram(
    "doctorai_dicom_store_seconds",
    "Time from the whole dataset received to the response (object stored, row committed)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OVERSIZE_PDUS = Counter("doctorai_dicom_oversize_pdus_total", "Associations aborted for a PDU over the maximum length")
PROCEDURE_STEPS = Counter(
    "doctorai_dicom_procedure_steps_total", "Modality performed procedure steps created or updated, by the status they reached", ["status"]
)
STUDIES_READY = Counter("doctorai_dicom_studies_ready_total", "Studies declared ready, by reason", ["reason"])

# Issue 9: studies still receiving, waiting for their quiet period (set by the sweep, one process).
STUDIES_WAITING = Gauge(
    "doctorai_studies_waiting", "Studies receiving instances, waiting for their quiet period", multiprocess_mode="livemax"
)
