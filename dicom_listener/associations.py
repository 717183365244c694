"""What the listener remembers about each live association of this process."""

import threading
from dataclasses import dataclass, field

from pynetdicom.association import Association

from dicom_listener.admission import Refusal
from dicom_listener.peers import PeerPolicy


@dataclass
class _State:
    policy: PeerPolicy | None = None
    studies: set[str] = field(default_factory=set)
    refusal: Refusal | None = None
    abort_reason: str = ""


class Associations:
    """Per-association state (admitted policy, studies audited, why it was refused or aborted), by thread-safe id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refused: dict[int, Refusal] = {}
        self._states: dict[int, _State] = {}

    def _state(self, assoc: Association) -> _State:
        return self._states.setdefault(id(assoc), _State())

    def admitted(self, assoc: Association, policy: PeerPolicy) -> None:
        """Remember the policy an association was admitted under."""
        with self.lock:
            self._state(assoc).policy = policy

    def policy(self, assoc: Association) -> PeerPolicy | None:
        """The policy the association was admitted under."""
        with self.lock:
            state = self._states.get(id(assoc))
            return state.policy if state else None

    def first(self, assoc: Association, study_uid: str) -> bool:
        """True the first time this association sends an instance of this study."""
        with self.lock:
            studies = self._state(assoc).studies
            if study_uid in studies:
                return False
            studies.add(study_uid)
            return True

    def note_abort(self, assoc: Association, reason: str) -> None:
        """Remember why we are aborting an association, for its audit record (the first reason wins)."""
        with self.lock:
            state = self._state(assoc)
            state.abort_reason = state.abort_reason or reason

    def abort_reason(self, assoc: Association) -> str:
        """Why we aborted it ("" when the peer did)."""
        with self.lock:
            state = self._states.get(id(assoc))
            return state.abort_reason if state else ""

    def refusal(self, assoc: Association) -> Refusal | None:
        """Why our admission check rejected it (None: pynetdicom's own checks did)."""
        with self.lock:
            return self.refused.get(id(assoc))

    def forget(self, assoc: Association) -> PeerPolicy | None:
        """Drop a closed connection; returns the policy it was admitted under, if it was."""
        with self.lock:
            self.refused.pop(id(assoc), None)
            state = self._states.pop(id(assoc), None)
            return state.policy if state else None
