"""`python -m hl7_listener`: the HL7 v2 listener over MLLP."""

from hl7_listener.server import main
from integration import heartbeats

if __name__ == "__main__":
    heartbeats.start("hl7", "hl7-listener")
    main()
