"""Connections refused before any association or message exists, audited and logged in aggregate (issue 18).

A flood of junk TCP connections (port scanners, HTTP probes, a load balancer's health checks)
must not write one append-only audit record and one log line each. The first refusal of a kind
from a source address in an interval is audited and logged at once; the rest of that interval
are counted, and one record with their count follows when the interval ends (or the listener
stops). The kind is the caller's (which hop, which check) and the reason with its numbers taken
out, so "PDU type 0x47" and "PDU type 0x16" are one kind. Used by the DICOM and MLLP listeners,
each writing its own audit record (`write`).
"""

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")

# Writes one audit record: source address, kind, who (as far as known), reason, how many refusals it stands for.
Write = Callable[[str, str, str, str, int], None]


@dataclass
class _Tally:
    reason: str
    started: float
    count: int = 0


class Refusals:
    """Refusals per (source address, kind, who, reason) in the current interval; thread-safe."""

    def __init__(self, write: Write, *, interval: float, what: str = "connection") -> None:
        self._write = write
        self._interval = interval
        self._what = what
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str, str, str], _Tally] = {}

    def note(self, address: str, reason: str, kind: str = "", who: str = "") -> None:
        """One connection from `address` (`who`, when it said) refused: audited now if it is the first of its kind
        in the interval, else counted."""
        key = (address, kind, who, _NUMBERS.sub("N", reason))
        now = time.monotonic()
        with self._lock:
            tally = self._tallies.get(key)
            if tally is not None:
                tally.count += 1
            else:
                self._tallies[key] = _Tally(reason, now)
        if tally is None:
            log.info("refused a %s from %s: %s", self._what, address, reason)
            self._write(address, kind, who, reason, 1)
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Audit the counts of every interval that has ended (all of them when `now` is None: the listener stops)."""
        with self._lock:
            due = [(key, t) for key, t in self._tallies.items() if now is None or now - t.started >= self._interval]
            for key, _ in due:
                del self._tallies[key]
        for (address, kind, who, _), tally in due:
            if tally.count:
                log.info("refused %d more %ss from %s: %s", tally.count, self._what, address, tally.reason)
                self._write(address, kind, who, tally.reason, tally.count)
