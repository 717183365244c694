"""C-FIND latency at the study level: our listener against Orthanc holding the same studies, in the same run.

Builds `--studies` small instances (8x8 secondary captures, one per study; 4 studies a patient,
100 family names, dates over 15 years, 4 modalities), sends them with dcmtk's storescu to

  (a) our listener (`python -m dicom_listener`) on the local stack's S3 (rclone) and SQLite, and
  (b) Orthanc (Debian's) with its own files and SQLite index,

then times Study Root C-FINDs of a few shapes on one open association each (pynetdicom as the
SCU for both), from the request to the final response, every match received. Each cell is the
median of `--repeats` queries; the ratio is Orthanc's time over ours (above 1: we are faster).

    .venv/bin/python benchmarks/dicom_query.py --studies 10000 --repeats 20
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doctorai.stack import StackConfig, engine_env, free_ports, http_ok, start_object_store  # noqa: E402
from doctorai.supervisor import Supervisor
from storage.db import migrate  # noqa: E402
from tests.orthanc import Modality, start_orthanc  # noqa: E402

ORTHANC = "/usr/sbin/Orthanc"
MODALITIES = ("CT", "MR", "CR", "US")
RETURNED = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)


def family(n: int) -> str:
    return f"FAMILY{n % 100:02d}"


def build_corpus(directory: Path, studies: int) -> None:
    """One small instance per study (pydicom-data's 1.4 KB secondary capture, new UIDs and keys), in `directory`."""
    directory.mkdir(parents=True)
    ds = dcmread(str(get_testdata_file("SC_rgb_small_odd.dcm")))
    for n in range(studies):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        patient = n // 4
        ds.PatientID, ds.PatientName = f"P{patient:06d}", f"{family(patient)}^GIVEN{patient % 37}"
        ds.PatientBirthDate, ds.PatientSex = f"{1940 + patient % 60}0101", "FM"[patient % 2]
        day = n % 5475  # 15 years of days
        ds.StudyDate = f"{2010 + day // 365}{1 + day % 365 // 31 % 12:02d}{1 + day % 28:02d}"
        ds.StudyTime = f"{8 + n % 10:02d}{n % 60:02d}00"
        ds.AccessionNumber, ds.StudyID, ds.StudyDescription = f"ACC{n:07d}", f"{n}", "benchmark study"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = MODALITIES[n % 4], 1, 1
        ds.ReferringPhysicianName = "REFERRER^ONE"
        ds.save_as(directory / f"{n:06d}.dcm", enforce_file_format=True)


def send(directory: Path, port: int) -> float:
    """Seconds for storescu to send the whole directory on one association."""
    started = time.perf_counter()
    done = subprocess.run(
        ["storescu", "+sd", "-aec", "DOCTORAI", "-aet", "BENCH", "127.0.0.1", str(port), str(directory)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-500:]}")
    return time.perf_counter() - started


def shapes(studies: int, sample: Dataset) -> dict[str, dict[str, str]]:
    """The query shapes: the matching keys of each (the returned keys are RETURNED)."""
    return {
        "one study by UID": {"StudyInstanceUID": str(sample.StudyInstanceUID)},
        "a patient's studies by ID": {"PatientID": str(sample.PatientID)},
        "by accession number": {"AccessionNumber": str(sample.AccessionNumber)},
        f"name wildcard (~{studies // 100})": {"PatientName": f"{family(7)}*"},
        f"one month of dates (~{studies // 180})": {"StudyDate": "20150101-20150131"},
        "modality and date range": {"ModalitiesInStudy": "MR", "StudyDate": "20200101-20201231"},
    }


def timed_finds(port: int, queries: dict[str, dict[str, str]], repeats: int) -> dict[str, tuple[float, int]]:
    """Per query shape: the median seconds of a C-FIND with every response read, and the matches."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DOCTORAI")
    if not assoc.is_established:
        raise RuntimeError(f"no association with port {port}")
    results = {}
    try:
        for name, keys in queries.items():
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            for keyword in RETURNED:
                setattr(identifier, keyword, keys.get(keyword, ""))
            times, matches = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                statuses = [int(status.Status) for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)]
                times.append(time.perf_counter() - started)
                if statuses[-1] != 0x0000:
                    raise RuntimeError(f"{name}: final status 0x{statuses[-1]:04X}")
                matches = len(statuses) - 1
            results[name] = (statistics.median(times), matches)
    finally:
        assoc.release()
    return results


def main() -> None:
    """Build the corpus, load both, time the query shapes, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("storescu") or not os.path.exists(ORTHANC):
        sys.exit("dcmtk and Orthanc are needed: apt-get install dcmtk orthanc")
    # dcmtk (storescu, and Orthanc's network layer) turns Nagle's algorithm off with this, as our
    # listener does for itself: without it every small response waits for a delayed ACK (40 ms).
    os.environ["TCP_NODELAY"] = "1"
    with tempfile.TemporaryDirectory(prefix="doctorai-query-bench-") as tmp:
        work = Path(tmp)
        build_corpus(work / "corpus", args.studies)
        sample = dcmread(work / "corpus" / f"{args.studies // 2:06d}.dcm", stop_before_pixels=True)
        config = StackConfig(var_dir=work / "stack", ports=free_ports())
        (config.var_dir / "logs").mkdir(parents=True)
        migrate(config.storage_settings().resolved_database_url())
        supervisor = Supervisor(config.var_dir / "logs")
        orthanc = None
        try:
            start_object_store(config, supervisor)
            env = {**engine_env(config), "DOCTORAI_DICOM_QUERY_RETRIEVE_UNKNOWN_PEERS": "true"}
            supervisor.start(
                "dicom",
                [sys.executable, "-m", "dicom_listener"],
                env=env,
                ready=lambda: http_ok(f"http://127.0.0.1:{config.ports.dicom_metrics}/metrics"),
                cwd=Path(__file__).resolve().parent.parent,
            )
            # BENCH as one of Orthanc's modalities, so that Orthanc answers its C-FINDs.
            orthanc = start_orthanc(work / "orthanc", aet="DOCTORAI", modalities={"bench": Modality("BENCH", 104)})
            ours_load, theirs_load = send(work / "corpus", config.ports.dicom), send(work / "corpus", orthanc.dicom_port)
            print(
                f"{args.studies} studies loaded by C-STORE: ours {ours_load:.0f} s, Orthanc {theirs_load:.0f} s; "
                f"median of {args.repeats} C-FINDs on an open association; {os.cpu_count()} CPUs"
            )
            queries = shapes(args.studies, sample)
            ours, theirs = timed_finds(config.ports.dicom, queries, args.repeats), timed_finds(orthanc.dicom_port, queries, args.repeats)
            print(f"{'query (study level)':34} {'matches':>8} {'ours ms':>9} {'Orthanc ms':>11} {'ratio':>6}")
            for name in queries:
                (o, n), (t, m) = ours[name], theirs[name]
                if n != m:
                    raise RuntimeError(f"{name}: {n} matches here, {m} in Orthanc")
                print(f"{name:34} {n:>8} {o * 1000:>9.1f} {t * 1000:>11.1f} {t / o:>6.2f}", flush=True)
        finally:
            if orthanc is not None:
                orthanc.stop()
            supervisor.stop_all()


if __name__ == "__main__":
    main()
