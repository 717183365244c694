"""C-STORE ingest throughput: our listener against dcmtk's storescp, measured in the same run.

Builds a corpus of real pydicom-data files with new UIDs (504 instances, about 390 MB: small
CT/MR slices and large CR images, 8 instances a study), then sends it with dcmtk's storescu
over 1 and 4 parallel associations to

  (a) the reference: dcmtk `storescp --fork` writing files to a local directory,
  (b) our listener (`python -m dicom_listener --workers N`) storing every instance to the local
      stack's S3 (rclone) and SQLite before it acknowledges (durable acknowledgements), and
  (c) for context, Orthanc (Debian's, when installed) storing to its own files and SQLite index,
      without fsync per instance (SyncStorageArea false: the same durability as (b) on rclone),

with two sender set-ups: dcmtk's defaults (16 KB PDU, Nagle on), and a tuned one (PDU 131072
on both sides, TCP_NODELAY=1 in dcmtk's environment, the reference storescp given the same).
Each cell is the median of `--repeats` runs; every run of ours starts from an empty database.

    .venv/bin/python benchmarks/dicom_ingest.py --repeats 3 --workers 2
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doctorai.stack import (
    StackConfig,
    engine_env,
    free_ports,
    http_ok,
    start_object_store,
    tcp_open,
)
from doctorai.supervisor import Supervisor
from storage.db import migrate  # noqa: E402

SMALL = ("CT_small.dcm", "MR_small.dcm")
LARGE = ("RG1_UNCR.dcm", "RG3_UNCR.dcm")
TUNED_PDU = "131072"


@dataclass(frozen=True)
class Setup:
    name: str
    sender_args: tuple[str, ...]
    env: dict[str, str]


SETUPS = (
    Setup("dcmtk defaults", (), {}),
    Setup("tuned (PDU 131072, TCP_NODELAY=1)", ("--max-pdu", TUNED_PDU), {"TCP_NODELAY": "1"}),
)


def build_corpus(directory: Path, small: int, large: int) -> list[Path]:
    """Real files with new Study/Series/SOP Instance UIDs, 8 instances a study."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [SMALL[i % len(SMALL)] for i in range(small)] + [LARGE[i % len(LARGE)] for i in range(large)]
    sources = {n: pydicom.dcmread(str(get_testdata_file(n))) for n in {*SMALL, *LARGE}}
    files = []
    study = series = ""
    for i, name in enumerate(names):
        if i % 8 == 0:
            study, series = generate_uid(), generate_uid()
        ds = sources[name]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i % 8 + 1
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def send(files: list[Path], port: int, associations: int, setup: Setup) -> float:
    """Seconds for `associations` storescu processes to send a share of the files each."""
    shares = [files[i::associations] for i in range(associations)]
    env = {**os.environ, **setup.env}
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", *setup.sender_args, "-aec", "DOCTORAI", "-aet", "BENCH", "127.0.0.1", str(port), *map(str, share)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    failed = []
    for p in senders:
        _, err = p.communicate(timeout=900)
        if p.returncode != 0 or err:
            failed.append(err.decode(errors="replace")[-500:])
    elapsed = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"storescu failed: {failed[0]}")
    return elapsed


def run_reference(files: list[Path], work: Path, associations: int, setup: Setup) -> float:
    """dcmtk storescp (a process per association) writing to a fresh directory."""
    out = work / "storescp-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    port = free_ports().dicom
    args = ["storescp", "--fork", "-aet", "DOCTORAI", "--output-directory", str(out), *setup.sender_args, str(port)]
    server = subprocess.Popen(args, env={**os.environ, **setup.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not tcp_open(port):
            if time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)
        seconds = send(files, port, associations, setup)
    finally:
        server.terminate()
        server.wait(10)
    stored = sum(1 for _ in out.iterdir())
    if stored != len(files):
        raise RuntimeError(f"storescp stored {stored} of {len(files)}")
    return seconds


ORTHANC = "/usr/sbin/Orthanc"


def run_orthanc(files: list[Path], work: Path, associations: int, setup: Setup) -> float:
    """Orthanc with a private configuration: its DICOM server on a free port, storage in `work`."""
    storage = work / "orthanc"
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir()
    ports = free_ports()
    config = {
        "Name": "BENCH",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "SyncStorageArea": False,
        "HttpPort": ports.http,
        "RemoteAccessAllowed": False,
        "DicomAet": "DOCTORAI",
        "DicomPort": ports.dicom,
        "DicomAlwaysAllowStore": True,
        "MaximumPduLength": int(TUNED_PDU) if setup.sender_args else 16384,
        "Plugins": [],
        "SaveJobs": False,
    }
    (storage / "orthanc.json").write_text(json.dumps(config))
    log = (storage / "orthanc.log").open("wb")
    server = subprocess.Popen([ORTHANC, str(storage / "orthanc.json")], env={**os.environ, **setup.env}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not tcp_open(ports.dicom):
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start")
            time.sleep(0.05)
        return send(files, ports.dicom, associations, setup)
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def run_ours(files: list[Path], stack: StackConfig, run: int, associations: int, setup: Setup, workers: int) -> float:
    """Our listener on the local stack's S3 with an empty SQLite database of its own."""
    ports = replace(free_ports(), s3=stack.ports.s3)
    config = StackConfig(var_dir=stack.var_dir / f"run{run}", ports=ports)
    config.var_dir.mkdir(parents=True)
    migrate(config.storage_settings().resolved_database_url())
    env = {**engine_env(config), "DOCTORAI_DICOM_WORKERS": str(workers)}
    supervisor = Supervisor(config.var_dir / "logs")
    try:
        supervisor.start(
            "dicom",
            [sys.executable, "-m", "dicom_listener"],
            env=env,
            ready=lambda: http_ok(f"http://127.0.0.1:{ports.dicom_metrics}/metrics"),
            cwd=Path(__file__).resolve().parent.parent,
        )
        return send(files, ports.dicom, associations, setup)
    finally:
        supervisor.stop_all()
        shutil.rmtree(config.var_dir / "objects", ignore_errors=True)


def main() -> None:
    """Build the corpus, measure both receivers in every set-up, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=448)
    parser.add_argument("--large", type=int, default=56)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="listener processes (DOCTORAI_DICOM_WORKERS)")
    args = parser.parse_args()
    if not shutil.which("storescu") or not shutil.which("storescp"):
        sys.exit("dcmtk is needed: apt-get install dcmtk")
    with tempfile.TemporaryDirectory(prefix="doctorai-ingest-bench-") as tmp:
        work = Path(tmp)
        files = build_corpus(work / "corpus", args.small, args.large)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"corpus: {len(files)} instances, {megabytes:.0f} MB; {os.cpu_count()} CPUs; "
              f"our listener with {args.workers} workers; median of {args.repeats}")
        stack = StackConfig(var_dir=work / "stack", ports=free_ports())
        services = Supervisor(work / "stack" / "logs")
        run = 0
        try:
            start_object_store(stack, services)
            orthanc = os.path.exists(ORTHANC)
            print(
                f"{'set-up':36} {'assocs':>6} {'storescp inst/s':>16} {'MB/s':>7} {'ours inst/s':>12} {'MB/s':>7} {'ratio':>6}"
                + (f" {'Orthanc inst/s':>15} {'ours/Orthanc':>13}" if orthanc else "")
            )
            for setup in SETUPS:
                for associations in (1, 4):
                    ref, ours, other = [], [], []
                    for _ in range(args.repeats):
                        ref.append(run_reference(files, work, associations, setup))
                        run += 1
                        ours.append(run_ours(files, stack, run, associations, setup, args.workers))
                        if orthanc:
                            other.append(run_orthanc(files, work, associations, setup))
                    r, o = statistics.median(ref), statistics.median(ours)
                    line = (
                        f"{setup.name:36} {associations:>6} {len(files) / r:>16.0f} {megabytes / r:>7.0f} "
                        f"{len(files) / o:>12.0f} {megabytes / o:>7.0f} {r / o:>6.2f}"
                    )
                    if orthanc:
                        t = statistics.median(other)
                        line += f" {len(files) / t:>15.0f} {t / o:>13.2f}"
                    print(line, flush=True)
        finally:
            services.stop_all()


if __name__ == "__main__":
    main()
