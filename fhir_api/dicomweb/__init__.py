"""DICOMweb (PS3.18) at /dicomweb, the base URL a viewer is given: WADO-RS retrieves (wado.py, with
frames.py and metadata.py), STOW-RS stores through the same ingest core as C-STORE (stow.py), and
QIDO-RS searches (qido.py). Tokens and scopes are the FHIR API's (access.py).
"""
