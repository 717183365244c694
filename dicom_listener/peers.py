"""Each calling AE's effective settings: its `dicom_peers` row over the listener's defaults, cached briefly."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine

from dicom_listener.config import DicomSettings
from integration.instances.ingest import DuplicatePolicy
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.peers import Peer, all_peers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerPolicy:
    """What the listener allows one calling AE and how it treats its studies."""

    ae_title: str
    known: bool  # listed in dicom_peers
    host: str  # "" = any address
    quiet_period: float
    max_associations: int
    max_pdu: int
    dimse_timeout: float
    network_timeout: float
    duplicate_policy: DuplicatePolicy
    # Query/Retrieve it may use (PS3.4 Annex C): its peer row's, or for an unknown AE the setting's.
    may_find: bool = False
    may_move: bool = False
    may_get: bool = False


def resolve(settings: DicomSettings, ae_title: str, peer: Peer | None) -> PeerPolicy:
    """The effective policy of `ae_title`: the peer's own values where set, the global ones elsewhere."""
    p = peer or Peer(ae_title=ae_title)

    def pick(own: float | int | None, default: float | int) -> float:
        return float(default if own is None else own)

    unknown_may = peer is None and settings.dicom_query_retrieve_unknown_peers

    return PeerPolicy(
        ae_title=ae_title,
        known=peer is not None,
        host=p.host,
        quiet_period=pick(p.quiet_period_seconds, settings.quiet_period_seconds),
        max_associations=int(pick(p.max_associations, settings.dicom_max_associations_per_peer)),
        max_pdu=int(pick(p.max_pdu, settings.dicom_max_pdu)),
        dimse_timeout=pick(p.dimse_timeout, settings.dicom_dimse_timeout),
        network_timeout=pick(p.network_timeout, settings.dicom_network_timeout),
        duplicate_policy=cast(DuplicatePolicy, p.duplicate_policy or settings.dicom_duplicate_policy),
        may_find=p.may_find or unknown_may,
        may_move=p.may_move or unknown_may,
        may_get=p.may_get or unknown_may,
    )


class PeerDirectory:
    """The `dicom_peers` table as the listener sees it: re-read at most every `dicom_peer_cache_seconds`.

    Edits (admin API, `doctorai peers`) reach every listener process within that time without a
    restart. When the database cannot be read, the last copy stays in use.
    """

    def __init__(self, engine: Engine, settings: DicomSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] | None = None
        self._read_at = 0.0

    def _current(self) -> dict[str, Peer]:
        with self._lock:
            now = self._clock()
            if self._peers is None or now - self._read_at >= self._settings.dicom_peer_cache_seconds:
                try:
                    with session_scope(self._engine) as session:
                        self._peers = {p.ae_title: p for p in all_peers(session)}
                except StorageUnavailable as exc:
                    log.warning("cannot read dicom_peers, using the last copy: %s", exc)
                    if self._peers is None:
                        raise
                self._read_at = now
            return self._peers

    def policy(self, ae_title: str) -> PeerPolicy:
        """The effective policy of one calling AE title. Raises StorageUnavailable before the first read."""
        title = ae_title.strip()
        return resolve(self._settings, title, self._current().get(title))

    def peer(self, ae_title: str) -> Peer | None:
        """One peer's row as last read (a C-MOVE destination, a commitment requester), or None."""
        return self._current().get(ae_title.strip())

    def quiet_periods(self) -> dict[str, float]:
        """Quiet periods of the peers that have their own."""
        return {t: p.quiet_period_seconds for t, p in self._current().items() if p.quiet_period_seconds is not None}
