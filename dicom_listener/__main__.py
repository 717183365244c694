"""`python -m dicom_listener [--workers N]`: the C-ECHO/C-STORE SCP and the quiet-period sweep."""

import argparse
import os
import tempfile
from functools import partial

from dicom_listener.config import get_settings
from integration.config import get_settings as get_integration_settings
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
    from dicom_listener import processes  # noqa: PLC0415 (imports prometheus_client: only now)
    from integration import process  # noqa: PLC0415 (likewise)

    # One process: its C-STORE commits leave SQLite checkpoints to its quiet-period sweep
    # (stability.run). Several: the parent only sweeps, the workers make engines of their own.
    checkpoints = settings.dicom_workers > 1
    storage, integration = get_storage_settings(), get_integration_settings()
    with process.started(storage, integration, kind="dicom", name="dicom-listener", checkpoints=checkpoints) as own:
        if settings.dicom_workers == 1:
            process.run_threads(partial(processes.serve_alone, settings=settings, own=own))
        else:
            process.run_threads(partial(processes.serve_workers, settings=settings, own=own))


if __name__ == "__main__":
    main()
