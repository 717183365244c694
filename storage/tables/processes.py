"""The engine's processes as they report themselves: one heartbeat row per running process."""

from datetime import datetime

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UTCDateTime


class ProcessHeartbeat(Base):
    """A process's last sign of life (integration/heartbeats.py writes it every few seconds)."""

    __tablename__ = "process_heartbeats"

    # Process name ("api", "inference-chest-xray-pneumonia"), host name and process id.
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer, primary_key=True)
    # What it is: dicom, hl7, api, subscriptions, integration, inference, results.
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # What the process says of itself besides being alive (the integration process: its open circuits).
    detail: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
