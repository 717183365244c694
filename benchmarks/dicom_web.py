"""WADO-RS retrieval throughput of a study: our /dicomweb against Orthanc's own DICOMweb, in the same run.

Builds two studies of real encodings with new UIDs: a CT series of 512x512 16-bit slices (0.5 MB
each, pixels from pydicom-data's CT_small tiled up) and a CR study of 7 MB radiographs
(RG1_UNCR). Each is stored

  (a) in ours by STOW-RS: `python -m fhir_api` on the local stack's S3 (rclone) and SQLite, and
  (b) in Orthanc 1.10 with its DICOMweb plugin (Debian's orthanc and orthanc-dicomweb), by its
      REST API, in its own files and SQLite index,

then retrieved whole with `GET .../studies/{uid}` and `Accept: multipart/related;
type="application/dicom"; transfer-syntax=*` (the stored bytes: no transcoding on either side),
read as it streams by one httpx client that parses the parts (fhir_api/dicomweb/multipart.py) and
counts them. Each cell is the median of `--repeats` retrieves.

    .venv/bin/python benchmarks/dicom_web.py --repeats 5
"""

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doctorai.stack import StackConfig, engine_env, free_ports, http_ok, start_object_store  # noqa: E402
from doctorai.supervisor import Supervisor
from fhir_api.auth.tokens import issue_token  # noqa: E402
from fhir_api.config import ApiSettings  # noqa: E402
from fhir_api.dicomweb import multipart  # noqa: E402
from storage.db import migrate  # noqa: E402
from tests.orthanc import start_orthanc  # noqa: E402

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STOW_BATCH = 16


@dataclass(frozen=True)
class Study:
    name: str
    uid: str
    files: list[bytes]

    @property
    def megabytes(self) -> float:
        return sum(map(len, self.files)) / 1e6


def _encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def build_studies(ct_slices: int, cr_images: int) -> list[Study]:
    """A CT series of 512x512 slices and a CR study of 7 MB images, each under new UIDs."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    tiled = np.tile(ct.pixel_array, (4, 4))
    ct.Rows, ct.Columns, ct.PixelData = 512, 512, tiled.astype(ct.pixel_array.dtype).tobytes()
    cr = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    studies = []
    for name, source, count in (("CT 512x512, 0.5 MB a slice", ct, ct_slices), ("CR, 7.2 MB an image", cr, cr_images)):
        uid, series = generate_uid(), generate_uid()
        files = []
        for n in range(count):
            source.StudyInstanceUID, source.SeriesInstanceUID, source.InstanceNumber = uid, series, n + 1
            source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            files.append(_encoded(source))
        studies.append(Study(name, uid, files))
    return studies


def retrieve(client: httpx.Client, url: str) -> tuple[float, int, int]:
    """Seconds to read a whole study as it streams, its parts and its bytes."""
    started = time.perf_counter()
    parts = size = 0
    with client.stream("GET", url, headers={"Accept": ACCEPT}) as response:
        response.raise_for_status()
        _, parameters = multipart.media_type(response.headers["content-type"])
        parser = multipart.Parser(parameters["boundary"])
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
            parts += sum(isinstance(event, multipart.PartStart) for event in parser.feed(chunk))
        parser.close()
    return time.perf_counter() - started, parts, size


def _stow(client: httpx.Client, url: str, files: list[bytes]) -> None:
    boundary = multipart.new_boundary()
    for start in range(0, len(files), STOW_BATCH):
        batch = files[start : start + STOW_BATCH]
        body = b"".join(
            multipart.part_head(boundary, "application/dicom", first=n == 0) + f for n, f in enumerate(batch)
        ) + multipart.close_delimiter(boundary, empty=False)
        answer = client.post(url, content=body, headers={"Content-Type": multipart.content_type("application/dicom", boundary)})
        if answer.status_code != 200:
            raise RuntimeError(f"STOW-RS answered {answer.status_code}: {answer.text[:300]}")


@contextmanager
def ours(stack: StackConfig, work: Path) -> Iterator[tuple[httpx.Client, str]]:
    """Our API on the stack's S3 and an empty SQLite database: a client with a token, and the DICOMweb base URL."""
    config = StackConfig(var_dir=work / "ours", ports=replace(free_ports(), s3=stack.ports.s3))
    config.var_dir.mkdir(parents=True)
    migrate(config.storage_settings().resolved_database_url())
    env = {**engine_env(config), "DOCTORAI_RATE_LIMIT_PER_SECOND": "0", "DOCTORAI_MAX_BODY_BYTES": str(1 << 30)}
    supervisor = Supervisor(config.var_dir / "logs")
    url = f"http://127.0.0.1:{config.ports.http}"
    try:
        supervisor.start(
            "api", [sys.executable, "-m", "fhir_api"], env=env, ready=lambda: http_ok(f"{url}/healthz"),
            cwd=Path(__file__).resolve().parent.parent,
        )
        token = issue_token(ApiSettings(), subject="benchmark", scopes=["system/ImagingStudy.rs", "system/ImagingStudy.c"], roles=[])
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=600) as client:
            yield client, f"{url}/dicomweb"
    finally:
        supervisor.stop_all()


@contextmanager
def orthanc(work: Path) -> Iterator[tuple[httpx.Client, str]]:
    """Orthanc with its DICOMweb plugin: a client of its REST API, and its DICOMweb base URL."""
    server = start_orthanc(work / "orthanc", aet="BENCH", dicomweb={})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=600) as client:
            yield client, f"http://127.0.0.1:{server.http_port}/dicom-web"
    finally:
        server.stop()


def measure(studies: list[Study], s3_port: int, work: Path, repeats: int) -> list[tuple[Study, float, float]]:
    """Median retrieve seconds of each study from ours and from Orthanc (which gets the same files)."""
    stack = StackConfig(var_dir=work / "stack", ports=replace(free_ports(), s3=s3_port))
    timings: dict[str, dict[str, float]] = {}
    for name, server in (("ours", ours(stack, work)), ("orthanc", orthanc(work))):
        with server as (client, base):
            for study in studies:
                if name == "ours":
                    _stow(client, f"{base}/studies", study.files)
                else:
                    for data in study.files:
                        client.post("/instances", content=data).raise_for_status()
                runs = []
                for _ in range(repeats):
                    seconds, parts, size = retrieve(client, f"{base}/studies/{study.uid}")
                    if parts != len(study.files):
                        raise RuntimeError(f"{name} gave {parts} of {len(study.files)} instances of {study.name}")
                    runs.append(seconds)
                timings.setdefault(study.uid, {})[name] = statistics.median(runs)
    return [(s, timings[s.uid]["ours"], timings[s.uid]["orthanc"]) for s in studies]


def main(argv: list[str] | None = None) -> None:
    """Build the studies, store them in both servers, retrieve each whole, print the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ct", type=int, default=300, help="slices of the CT study")
    parser.add_argument("--cr", type=int, default=16, help="images of the CR study")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="doctorai-dicomweb-bench-") as tmp:
        work = Path(tmp)
        studies = build_studies(args.ct, args.cr)
        stack = StackConfig(var_dir=work / "services", ports=free_ports())
        services = Supervisor(work / "services" / "logs")
        try:
            start_object_store(stack, services)
            rows = measure(studies, stack.ports.s3, work, args.repeats)
        finally:
            services.stop_all()
    print(f"WADO-RS retrieve of a whole study, transfer-syntax=*, median of {args.repeats}")
    print(f"{'study':28} {'instances':>9} {'MB':>6} {'ours inst/s':>12} {'MB/s':>7} {'Orthanc inst/s':>15} {'MB/s':>7} {'ours/Orthanc':>13}")
    for study, mine, theirs in rows:
        n, mb = len(study.files), study.megabytes
        print(
            f"{study.name:28} {n:>9} {mb:>6.0f} {n / mine:>12.0f} {mb / mine:>7.0f} "
            f"{n / theirs:>15.0f} {mb / theirs:>7.0f} {theirs / mine:>13.2f}"
        )


if __name__ == "__main__":
    main()
