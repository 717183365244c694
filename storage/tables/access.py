"""Who may talk to the engine: API clients (SMART Backend Services) with the assertions they used,
the DICOM peers allowed to send, and the people who sign in to the console with their sessions."""

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UTCDateTime


class ApiClient(Base):
    """A registered back-end client (SMART Backend Services): its allowed scopes and credentials."""

    __tablename__ = "api_clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    # Space-separated SMART scopes this client may ask for.
    scopes: Mapped[str] = mapped_column(Text)
    # private_key_jwt: `jwks` holds the public keys (a JWK Set as JSON); client_secret_basic: `secret_hash`.
    auth_method: Mapped[str] = mapped_column(String(32))
    jwks: Mapped[str] = mapped_column(Text, default="")
    secret_hash: Mapped[str] = mapped_column(String(256), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClientAssertion(Base):
    """The jti of a client assertion already used, kept until it expires (RFC 7523 section 3, replay)."""

    __tablename__ = "client_assertions"

    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DicomPeer(Base):
    """A calling AE title allowed to send to the listener, with its own settings (NULL: the global one),
    what it may ask of it (query, retrieve), and where it listens (move destination, commitment reports)."""

    __tablename__ = "dicom_peers"

    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    # Empty: any address; otherwise the only host or IP address the AE may call from.
    host: Mapped[str] = mapped_column(String(255), default="")
    quiet_period_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_associations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_pdu: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dimse_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    network_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    # keep-first | keep-last | reject: what a re-send of a SOP instance with other bytes does.
    duplicate_policy: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Issue 17: the port its own SCP listens on (at `host`), for C-MOVE and commitment reports.
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Query/Retrieve (PS3.4 Annex C) it may use: C-FIND, C-MOVE, C-GET.
    may_find: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    may_move: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    may_get: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    """A person who signs in to the console: a role, a slow password hash, and the lock-out counters."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # admin | operator | auditor: the same roles as the admin API's tokens (fhir_api/admin/access.py).
    role: Mapped[str] = mapped_column(String(16))
    # "scrypt$n$r$p$salt$digest" (fhir_api/auth/users.py): the parameters travel with the hash.
    password_hash: Mapped[str] = mapped_column(String(512))
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ConsoleSession(Base):
    """A signed-in person's session; the cookie carries a random id, the table only its SHA-256."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), index=True)
    # Sent back in the X-CSRF-Token header of every change (double submit, checked against this row).
    csrf_token: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class RevokedToken(Base):
    """A bearer token revoked before it expires (issue 18): refused on every request by its jti
    (the primary key: one indexed lookup), kept until it would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    subject: Mapped[str] = mapped_column(String(256), default="")
    # NULL when revoked by jti alone (its expiry unknown): kept for good.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(256), default="")
