"""`python -m hl7_listener`: the HL7 v2 listener over MLLP."""

from hl7_listener.server import main

if __name__ == "__main__":
    main()
