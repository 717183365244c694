"""`python -m dicom_listener [--workers N]`: the C-ECHO/C-STORE SCP and the quiet-period sweep."""

import argparse
import os
import tempfile

from dicom_listener.config import get_settings
from integration import heartbeats
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings


def main() -> None:
    """Read the settings, prepare multiprocess metrics when there are several workers, and serve."""
    parser = argparse.ArgumentParser(prog="python -m dicom_listener", description="DoctorAI DICOM listener")
    parser.add_argument("--workers", type=int, default=0, help="listener processes (default DOCTORAI_DICOM_WORKERS)")
    args = parser.parse_args()
    settings = get_settings()
    if args.workers:
        settings = settings.model_copy(update={"dicom_workers": args.workers})
    if settings.dicom_workers > 1:
        # prometheus_client chooses its multiprocess mode when first imported, so the directory
        # must be in the environment before anything imports it (and the spawned workers inherit it).
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="doctorai-dicom-metrics-"))
    exit_if_unsafe(get_storage_settings())
    from dicom_listener import processes

    heartbeats.start("dicom", "dicom-listener")
    processes.run(settings)


if __name__ == "__main__":
    main()
