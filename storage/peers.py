"""DICOM peers: the calling AE titles allowed to send, each with its own settings, what it may query
or retrieve, and where it listens (`dicom_peers`).

The listener reads them through a short cache, the `doctorai peers` command writes them, and the
admin API will edit the same rows.
"""

from dataclasses import dataclass, fields
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.tables.access import DicomPeer

DUPLICATE_POLICIES = ("keep-first", "keep-last", "reject")


@dataclass(frozen=True)
class Peer:
    """One calling AE and its settings; None means "use the listener's global setting"."""

    ae_title: str
    host: str = ""
    quiet_period_seconds: float | None = None
    max_associations: int | None = None
    max_pdu: int | None = None
    dimse_timeout: float | None = None
    network_timeout: float | None = None
    duplicate_policy: str | None = None
    # Where its SCP listens (with `host`): a C-MOVE destination, where commitment reports go.
    port: int | None = None
    # Query/Retrieve it may use (PS3.4 Annex C): C-FIND, C-MOVE, C-GET.
    may_find: bool = False
    may_move: bool = False
    may_get: bool = False


def _peer(row: DicomPeer) -> Peer:
    return Peer(**{f.name: getattr(row, f.name) for f in fields(Peer)})


def all_peers(session: Session) -> list[Peer]:
    """Every configured peer, by AE title."""
    return [_peer(row) for row in session.scalars(select(DicomPeer).order_by(DicomPeer.ae_title))]


def get_peer(session: Session, *, ae_title: str) -> Peer | None:
    """One peer's settings, or None."""
    row = session.get(DicomPeer, ae_title.strip())
    return None if row is None else _peer(row)


def save_peer(session: Session, peer: Peer) -> None:
    """Create or replace a peer's row."""
    if peer.duplicate_policy is not None and peer.duplicate_policy not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicate policy must be one of {', '.join(DUPLICATE_POLICIES)}")
    # AE titles are at most 16 characters, leading and trailing spaces not significant (PS3.5 6.2).
    title = peer.ae_title.strip()
    if not title or len(title) > 16:
        raise ValueError("an AE title has 1 to 16 characters")
    row = session.get(DicomPeer, title) or DicomPeer(ae_title=title)
    for f in fields(Peer):
        if f.name != "ae_title":
            setattr(row, f.name, getattr(peer, f.name))
    row.updated_at = datetime.now(UTC)
    session.merge(row)


def delete_peer(session: Session, *, ae_title: str) -> bool:
    """Remove a peer; False when there was none."""
    row = session.get(DicomPeer, ae_title.strip())
    if row is None:
        return False
    session.delete(row)
    return True
