"""Object storage on the S3 API (MinIO in production, rclone locally): keys and put/get.

Keys derive from identifiers (DESIGN.md section 6), so a retry overwrites the same object.
"""

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException

from storage.config import StorageSettings
from storage.errors import StorageUnavailable


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


def result_key(job_id: str, filename: str) -> str:
    """Key of an object a model produced for one job (a mask, a segmentation)."""
    return f"results/{job_id}/{filename}"


@dataclass(frozen=True)
class ObjectStore:
    """A bucket on an S3-compatible server."""

    client: Minio
    bucket: str

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise StorageUnavailable(f"object store unavailable: {exc!r}") from exc

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Upload a file, streaming it in parts, so memory stays flat whatever its size."""
        try:
            # One part in flight (5 MiB): minio's default of three parallel parts triples the
            # memory a large instance costs, for no gain on a LAN.
            self.client.fput_object(self.bucket, key, str(path), content_type=content_type, num_parallel_uploads=1)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store refused {key}: {exc!r}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Upload a small object held in memory."""
        try:
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store refused {key}: {exc!r}") from exc

    def get_bytes(self, key: str) -> bytes:
        """Download a whole object."""
        try:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
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
    return ObjectStore(client=client, bucket=settings.s3_bucket)
