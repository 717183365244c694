"""Connections refused before any association exists, audited and logged in aggregate (issue 18).

A flood of junk TCP connections (port scanners, HTTP probes, a load balancer's health checks)
must not write one append-only audit record and one log line each. The first refusal of a kind
from a source address in an interval is audited and logged at once; the rest of that interval
are counted, and one record with their count follows when the interval ends (or the listener
stops). The kind is the reason with its numbers taken out, so "PDU type 0x47" and "PDU type
0x16" are one kind.
"""

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass

from audit.records import ASSOCIATION_ABORTED, AuditRecord, Hop, Outcome
from integration.instances import ingest
from sqlalchemy import Engine

log = logging.getLogger(__name__)

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


@dataclass
class _Tally:
    hop: Hop
    reason: str
    started: float
    count: int = 0


class Refusals:
    """Refusals per (source address, hop, kind) in the current interval; thread-safe."""

    def __init__(self, engine: Engine, ae_title: str, *, interval: float) -> None:
        self._engine = engine
        self._ae_title = ae_title
        self._interval = interval
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str, str], _Tally] = {}

    def note(self, address: str, reason: str, hop: Hop = ASSOCIATION_ABORTED) -> None:
        """One connection from `address` refused for `reason`: audited now if it is the first of its kind, else counted."""
        key = (address, hop.subtype, _NUMBERS.sub("N", reason))
        now = time.monotonic()
        with self._lock:
            tally = self._tallies.get(key)
            first = tally is None
            if tally is None:
                self._tallies[key] = _Tally(hop, reason, now)
            else:
                tally.count += 1
        if first:
            log.info("refused a connection from %s: %s", address, reason)
            self._write(address, hop, reason, 1)
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Audit the counts of every interval that has ended (every one, when `now` is None: the listener stops)."""
        with self._lock:
            due = [
                (key, tally)
                for key, tally in self._tallies.items()
                if now is None or now - tally.started >= self._interval
            ]
            for key, _ in due:
                del self._tallies[key]
        for (address, _, _), tally in due:
            if tally.count:
                log.info("refused %d more connections from %s: %s", tally.count, address, tally.reason)
                self._write(address, tally.hop, tally.reason, tally.count)

    def _write(self, address: str, hop: Hop, reason: str, count: int) -> None:
        record = AuditRecord(
            hop=hop,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=f"host:{address}",
            agent_address=address,
            entity_what=f"ae:{self._ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason, "count": str(count), "interval_seconds": f"{self._interval:g}"},
        )
        ingest.audit(self._engine, record, "refused connections")
