"""Object storage on the S3 API (MinIO in production, rclone locally): keys and put/get.

Keys derive from identifiers (DESIGN.md section 6), so a retry overwrites the same object.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import urllib3
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.helpers import DictType
from minio.error import MinioException
from minio.signer import sign_v4_s3
from minio.time import to_amz_date

from storage.config import StorageSettings
from storage.errors import ObjectTooLarge, StorageUnavailable


def dicom_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Key of one instance, stored as received with its file meta header."""
    return f"dicom/{study_uid}/{series_uid}/{sop_uid}.dcm"


def dicom_version_key(study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
    """Key of a later version of an instance (other bytes, same UIDs): named by its content, so a
    retry overwrites only itself and earlier versions stay as they were."""
    return f"dicom/{study_uid}/{series_uid}/{sop_uid}.{sha256[:16]}.dcm"


def hl7_key(received: datetime, message_id: str) -> str:
    """Key of one raw HL7 v2 message."""
    return f"hl7/{received:%Y/%m/%d}/{message_id}.hl7"


def model_key(name: str, version: str, filename: str) -> str:
    """Key of one file of a model package."""
    return f"models/{name}/{version}/{filename}"


def is_dicom_key(key: str) -> bool:
    """Whether a key names a DICOM instance of a study (dicom_key, dicom_version_key)."""
    return key.startswith("dicom/") and key.endswith(".dcm")


def result_key(job_id: str, filename: str) -> str:
    """Key of an object a model produced for one job (a mask, a segmentation)."""
    return f"results/{job_id}/{filename}"


# The largest object one PutObject request may carry (S3 API); bigger files go up in parts.
SINGLE_PUT_LIMIT = 5 << 30
_CHUNK = 1 << 20
_S3_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so memory stays flat whatever its size."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ObjectStore:
    """A bucket on an S3-compatible server."""

    client: Minio
    bucket: str
    # Uploads bypass the minio client: one signed PUT with the payload's SHA-256 (below).
    http: urllib3.PoolManager
    base_url: str
    region: str
    credentials: Credentials

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StorageUnavailable(f"object store unavailable: {exc!r}") from exc

    def put(self, key: str, body: bytes | BinaryIO, *, size: int, sha256: str, content_type: str) -> None:
        """Upload `size` bytes whose SHA-256 is known, in one PutObject request, streamed from `body`.

        The hash signs the payload (AWS Signature V4, x-amz-content-sha256), so a server that checks
        it (MinIO, S3) refuses bytes damaged on the way; and nothing is read twice to compute it.
        minio's put_object would hash the payload again, and split anything over 5 MiB into a
        multipart upload of four requests.
        """
        url = urlsplit(f"{self.base_url}/{self.bucket}/{quote(key)}")
        date = datetime.now(UTC)
        headers: DictType = {
            "Host": url.netloc,
            "Content-Type": content_type,
            "Content-Length": str(size),
            "x-amz-content-sha256": sha256,
            "x-amz-date": to_amz_date(date),
        }
        headers = sign_v4_s3(
            method="PUT", url=url, region=self.region, headers=headers, credentials=self.credentials, content_sha256=sha256, date=date
        )
        try:
            signed = {k: str(v) for k, v in headers.items()}  # every value set above is a single string
            response = self.http.request("PUT", url.geturl(), body=body, headers=signed)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store refused {key}: {exc!r}") from exc
        if response.status != 200:
            code = _S3_ERROR_CODE.search(response.data or b"")
            raise StorageUnavailable(f"object store refused {key}: HTTP {response.status} {code.group(1).decode() if code else ''}")

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream", *, sha256: str = "") -> None:
        """Upload a file, streaming it, so memory stays flat whatever its size; `sha256` when already known."""
        size = path.stat().st_size
        if size > SINGLE_PUT_LIMIT:
            try:
                # One part in flight: minio's default of three parallel parts triples the memory.
                self.client.fput_object(self.bucket, key, str(path), content_type=content_type, num_parallel_uploads=1)
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise StorageUnavailable(f"object store refused {key}: {exc!r}") from exc
            return
        with path.open("rb") as f:
            self.put(key, f, size=size, sha256=sha256 or sha256_of_file(path), content_type=content_type)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream", *, sha256: str = "") -> None:
        """Upload an object held in memory; `sha256` when already known."""
        self.put(key, data, size=len(data), sha256=sha256 or hashlib.sha256(data).hexdigest(), content_type=content_type)

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Download a whole object; ObjectTooLarge (permanent) when it has more than `max_bytes`,
        found reading at most one byte past the bound."""
        try:
            response = self.client.get_object(self.bucket, key)
            try:
                data: bytes = response.read() if max_bytes is None else response.read(max_bytes + 1)
                if max_bytes is not None and len(data) > max_bytes:
                    raise ObjectTooLarge(f"{key} has more than {max_bytes} bytes")
                return data
            finally:
                response.close()
                response.release_conn()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store cannot give {key}: {exc!r}") from exc

    def get_start(self, key: str, *, length: int) -> bytes:
        """The first `length` bytes of an object (all of it when shorter): enough for a DICOM header."""
        try:
            response = self.client.get_object(self.bucket, key, offset=0, length=length)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store cannot give {key}: {exc!r}") from exc

    def stream(self, key: str, *, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """An object's bytes in chunks as the store sends them, so memory stays flat whatever its size.

        Raises StorageUnavailable when the store cannot give it, at the first chunk or on the way.
        """
        try:
            response = self.client.get_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store cannot give {key}: {exc!r}") from exc
        try:
            yield from response.stream(chunk_size)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store stopped giving {key}: {exc!r}") from exc
        finally:
            response.close()
            response.release_conn()

    def get_file(self, key: str, path: Path) -> None:
        """Download an object to a file, streaming it, so memory stays flat whatever its size."""
        try:
            self.client.fget_object(self.bucket, key, str(path))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store cannot give {key}: {exc!r}") from exc

    def list_keys(self, prefix: str) -> dict[str, int]:
        """Every key under `prefix` with its size in bytes."""
        try:
            return {
                o.object_name: o.size or 0
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None
            }
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store cannot list {prefix}: {exc!r}") from exc

    def ping(self) -> None:
        """Raise StorageUnavailable unless the bucket answers."""
        try:
            self.client.bucket_exists(self.bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store unavailable: {exc!r}") from exc


def make_object_store(settings: StorageSettings) -> ObjectStore:
    """Build the store from settings. Region is fixed so minio skips its bucket-location probe."""
    # Short timeouts and few retries: callers turn failures into protocol answers
    # (C-STORE 0xA700, HTTP 503) and the sender retries; we must not hang a listener.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=30.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=16,
    )
    client = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http,
    )
    scheme = "https" if settings.s3_secure else "http"
    return ObjectStore(
        client=client,
        bucket=settings.s3_bucket,
        http=http,
        base_url=f"{scheme}://{settings.s3_endpoint}",
        region=settings.s3_region,
        credentials=Credentials(settings.s3_access_key, settings.s3_secret_key),
    )
