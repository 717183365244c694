"""Prometheus metrics of the DICOM listener."""

from prometheus_client import Counter, Histogram

ASSOCIATIONS = Counter(
    "doctorai_dicom_associations_total", "Associations by outcome", ["outcome"]
)
INSTANCES = Counter(
    "doctorai_dicom_instances_received_total", "C-STORE requests by DIMSE status class", ["status"]
)
BYTES = Counter("doctorai_dicom_received_bytes_total", "Bytes of instances stored")
STORE_SECONDS = Histogram(
    "doctorai_dicom_store_seconds",
    "Time from C-STORE request to response (object stored, row committed)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STUDIES_READY = Counter("doctorai_dicom_studies_ready_total", "Studies declared ready", ["reason"])
