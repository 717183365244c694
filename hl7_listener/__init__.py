"""hl7_listener."""
