"""`python -m results`: the results consumer (study.ready and inference.result into FHIR, and their exports)."""

from integration import heartbeats
from results.consumer import main

if __name__ == "__main__":
    heartbeats.start("results")
    main()
