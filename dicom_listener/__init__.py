"""The DICOM listener: C-ECHO and C-STORE SCP that stores every instance before it answers."""
