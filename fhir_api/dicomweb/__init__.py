"""DICOMweb at /dicomweb (PS3.18): QIDO-RS searches (qido.py)."""
