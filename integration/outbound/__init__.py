"""Outbound: one delivery engine for every destination kind, with one module per transport (MLLP, HTTP, DICOM)."""
