"""Who may associate: calling AE allowlist and host, association limits, per-peer PDU and timeouts.

Rejections carry the result/source/reason of PS3.8 9.3.4 (Table 9-21). The counts are shared
by every listener process, so the limits hold whichever process the kernel gave a connection to.
"""

import multiprocessing
import socket
import zlib
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from dicom_listener.peers import PeerPolicy

@dataclass(frozen=True)
class Refusal:
    """An A-ASSOCIATE-RJ: result (1 permanent, 2 transient), source, reason/diag (PS3.8 9.3.4)."""

    result: int
    source: int
    reason: int
    why: str

def calling_ae_not_recognised(why: str) -> Refusal:
    """Rejected-permanent by the service user: calling-AE-title-not-recognized."""
    return Refusal(0x01, 0x01, 0x03, why)

def local_limit_exceeded(why: str) -> Refusal:
    """Rejected-transient by the service provider (presentation): local-limit-exceeded."""
    return Refusal(0x02, 0x03, 0x02, why)

def temporary_congestion(why: str) -> Refusal:
    """Rejected-transient by the service provider (presentation): temporary-congestion."""
    return Refusal(0x02, 0x03, 0x01, why)

class AssociationCounts:
    """Active associations, in total and per calling AE, shared by every listener process.

    Each process counts in its own row of shared memory, so a worker that dies takes only its
    own row with it (the parent zeroes it). Calling AE titles hash into a fixed number of slots;
    two titles sharing a slot share a limit, which can only make it stricter.
    """

    SLOTS = 1024

    def __init__(self, workers: int, context: BaseContext | None = None) -> None:
        ctx = context or multiprocessing.get_context("spawn")
        self._lock: Any = ctx.Lock()
        self._per_ae: Any = ctx.RawArray("i", workers * self.SLOTS)
        self._totals: Any = ctx.RawArray("i", workers)
        self.workers = workers
        self.worker = 0  # this process's row; each worker sets its own

    def _slot(self, ae_title: str) -> int:
        return zlib.crc32(ae_title.encode()) % self.SLOTS

    def acquire(self, ae_title: str, *, total_limit: int, peer_limit: int) -> Refusal | None:
        """Count one more association of `ae_title`, or say which limit it would exceed."""
        slot = self._slot(ae_title)
        with self._lock:
            if sum(self._totals) >= total_limit:
                return local_limit_exceeded(f"{total_limit} associations already active")
            if sum(self._per_ae[w * self.SLOTS + slot] for w in range(self.workers)) >= peer_limit:
                return local_limit_exceeded(f"{peer_limit} associations of this AE already active")
            self._per_ae[self.worker * self.SLOTS + slot] += 1
            self._totals[self.worker] += 1
        return None

    def release(self, ae_title: str) -> None:
        """Count one association of `ae_title` fewer."""
        slot = self._slot(ae_title)
        with self._lock:
            self._per_ae[self.worker * self.SLOTS + slot] -= 1
            self._totals[self.worker] -= 1

    def forget_worker(self, worker: int) -> None:
        """Zero a dead worker's row: its connections died with it."""
        with self._lock:
            for slot in range(self.SLOTS):
                self._per_ae[worker * self.SLOTS + slot] = 0
            self._totals[worker] = 0

    def active(self) -> int:
        """Associations active in every process."""
        with self._lock:
            return int(sum(self._totals))

def _host_matches(expected: str, address: str) -> bool:
    if not expected or expected == address:
        return True
    try:
        return address in {info[4][0] for info in socket.getaddrinfo(expected, None)}
    except OSError:
        return False

def check_peer(policy: PeerPolicy, address: str, *, allow_unknown: bool) -> Refusal | None:
    """The allowlist check: a known AE title, calling from its host when one is set."""
    if not policy.known and not allow_unknown:
        return calling_ae_not_recognised("calling AE title not in dicom_peers")
    if policy.known and not _host_matches(policy.host, address):
        return calling_ae_not_recognised("calling AE title not allowed from this address")
    return None
