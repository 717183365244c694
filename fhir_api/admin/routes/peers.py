"""/admin/peers: the calling AE titles allowed to send to the DICOM listener, their own settings, what
each may query or retrieve (Query/Retrieve, PS3.4 Annex C), and where each listens.

The listener reads these rows through a short cache (dicom_listener/peers.py), so a change takes
effect within seconds, without a restart.
"""

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from audit.records import ADMIN_CONFIGURATION, NETWORK_CONFIGURATION
from fhir_api.admin.params import StoredInt
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, page_of, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.errors import NotFound
from storage.db import session_scope
from storage.peers import Peer, all_peers, delete_peer, get_peer, save_peer

router = APIRouter(prefix="/peers", tags=["peers"])
# AE titles are 1 to 16 characters, leading and trailing spaces not significant (PS3.5 6.2).
AeTitle = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[^\\\x00-\x1f]*\S[^\\\x00-\x1f]*$")]


class PeerSettings(BaseModel):
    """A peer's settings; null means "use the listener's global setting"."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("", max_length=255, description="the only host or address it may call from; empty: any")
    quiet_period_seconds: float | None = Field(
        None, ge=0, description="seconds without instances before a study is ready"
    )
    max_associations: StoredInt | None = Field(None, ge=1)
    max_pdu: StoredInt | None = Field(None, ge=0, description="maximum PDU length it may send us (PS3.8 D.1); 0: unlimited")
    dimse_timeout: float | None = Field(None, gt=0)
    network_timeout: float | None = Field(None, gt=0)
    duplicate_policy: Literal["keep-first", "keep-last", "reject"] | None = Field(
        None, description="what a re-send of a SOP instance with other bytes does"
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="where its own SCP listens (at host): a C-MOVE destination, storage commitment reports"
    )
    may_find: bool = Field(False, description="may query the index (C-FIND)")
    may_move: bool = Field(False, description="may retrieve with C-MOVE")
    may_get: bool = Field(False, description="may retrieve with C-GET")


class PeerOut(PeerSettings):
    """One peer as stored."""

    ae_title: str


def _out(peer: Peer) -> PeerOut:
    return PeerOut.model_validate(asdict(peer))


_SORTS = ("ae_title", "host", "quiet_period_seconds", "max_associations", "duplicate_policy")


@router.get("")
def list_peers(engine: EngineDep, paging: Annotated[Paging, Depends(sorted_by(_SORTS))]) -> Page[PeerOut]:
    """The peers allowed to send, by AE title unless sorted otherwise."""
    with session_scope(engine) as session:
        peers = [_out(p) for p in all_peers(session)]
    return page_of(peers, paging, getattr)


@router.get("/{ae_title}")
def read_peer(ae_title: AeTitle, engine: EngineDep) -> PeerOut:
    """One peer."""
    with session_scope(engine) as session:
        peer = get_peer(session, ae_title=ae_title)
    if peer is None:
        raise NotFound(f"no peer {ae_title.strip()}")
    return _out(peer)


@router.put("/{ae_title}", responses={201: {"model": PeerOut}})
def put_peer(ae_title: AeTitle, body: PeerSettings, engine: EngineDep, actor: ActorDep, response: Response) -> PeerOut:
    """Allow an AE title to send, or replace its settings (201 when it is new)."""
    peer = Peer(ae_title=ae_title.strip(), **body.model_dump())
    with session_scope(engine) as session:
        before = get_peer(session, ae_title=peer.ae_title)
        save_peer(session, peer)
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before=None if before is None else asdict(before),
            after=asdict(peer),
            detail={"alert_type": NETWORK_CONFIGURATION},
        )
    response.status_code = 201 if before is None else 200
    return _out(peer)


@router.delete("/{ae_title}", status_code=204)
def remove_peer(ae_title: AeTitle, engine: EngineDep, actor: ActorDep) -> Response:
    """Stop accepting associations from an AE title."""
    with session_scope(engine) as session:
        before = get_peer(session, ae_title=ae_title)
        if before is None or not delete_peer(session, ae_title=ae_title):
            raise NotFound(f"no peer {ae_title.strip()}")
        audit_change(
            session,
            actor,
            hop=ADMIN_CONFIGURATION,
            before=asdict(before),
            after=None,
            detail={"alert_type": NETWORK_CONFIGURATION},
        )
    return Response(status_code=204)
