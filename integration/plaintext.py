"""Links that carry data in clear text, named at start-up in production mode (issue 18).

The local stack's defaults (S3 over HTTP, Kafka PLAINTEXT, destinations without TLS) are fine on a
laptop. In production each such link is one WARNING line at start-up, so an operator sees what
crosses the network unencrypted; the process starts all the same (inside one host or one
cluster network they may be acceptable, which is the operator's call).
"""

import logging
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from integration.config import IntegrationSettings
from storage.config import StorageSettings
from storage.db import read_scope
from storage.destinations import destinations
from storage.errors import StorageError
from storage.tables.outbound import Destination

log = logging.getLogger(__name__)

# libpq sslmode values that encrypt (PostgreSQL "Protection Provided in Different Modes").
_ENCRYPTING_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})


def plaintext_links(storage: StorageSettings, integration: IntegrationSettings) -> list[str]:
    """The process's own links that are not encrypted: object store, broker, database."""
    links = []
    if not storage.s3_secure:
        links.append(f"object store {storage.s3_endpoint}: HTTP without TLS (DOCTORAI_S3_SECURE=false)")
    # The engine's Kafka clients speak PLAINTEXT only; keep the broker on a private network.
    links.append(f"Kafka {integration.kafka_bootstrap}: PLAINTEXT, no TLS")
    url = storage.database_url
    if url.startswith("postgresql"):
        sslmode = parse_qs(urlsplit(url).query).get("sslmode", [""])[0]
        if sslmode not in _ENCRYPTING_SSLMODES:
            host = urlsplit(url).hostname or "localhost"
            links.append(f"PostgreSQL {host}: not required to use TLS (add ?sslmode=verify-full to DOCTORAI_DATABASE_URL)")
    return links


def plaintext_destination(row: Destination) -> str | None:
    """The warning for a destination reached without TLS, or None."""
    if row.kind in ("dicom", "mllp"):
        return None if row.tls else f"destination {row.name} ({row.kind} {row.host}:{row.port}): no TLS"
    url = row.options.get("base_url") or row.options.get("url") or ""
    return f"destination {row.name} ({row.kind} {url}): http, not https" if url.startswith("http://") else None


def warn_links(storage: StorageSettings, integration: IntegrationSettings) -> None:
    """In production mode, one WARNING per plaintext link of the process's own."""
    if storage.env == "production":
        for warning in plaintext_links(storage, integration):
            log.warning("plaintext link: %s", warning)


def warn_destinations(storage: StorageSettings, engine: Engine) -> None:
    """In production mode, one WARNING per enabled destination reached in clear text."""
    if storage.env != "production":
        return
    try:
        with read_scope(engine) as session:
            rows = destinations(session, enabled_only=True)
    except (StorageError, SQLAlchemyError) as exc:
        log.info("destinations not checked for TLS at start-up: %s", type(exc).__name__)
        return
    for warning in map(plaintext_destination, rows):
        if warning is not None:
            log.warning("plaintext link: %s", warning)
