"""One ingest path for every front door: reading an instance's index fields, spooling it, the duplicate
decision, the object put, and its index rows and audit records committed in group (ingest.py).

The DICOM listener (C-STORE) and the API (STOW-RS) are the front doors; the results consumer
stores the SR and SEG a model's result adds to a study through the same core.
"""
