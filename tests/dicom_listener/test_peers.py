"""A calling AE's effective policy: its peer row over the listener's settings, Query/Retrieve permissions included."""

from dicom_listener.config import DicomSettings
from dicom_listener.peers import resolve
from storage.peers import Peer


def test_query_retrieve_is_the_peers_own_or_the_setting_for_unknown_ones() -> None:
    closed, open_ = DicomSettings(), DicomSettings(dicom_query_retrieve_unknown_peers=True)
    listed = Peer(ae_title="PACS", may_find=True, may_get=True)
    assert [(p.may_find, p.may_move, p.may_get) for p in (resolve(closed, "PACS", listed), resolve(open_, "PACS", listed))] == [
        (True, False, True),
        (True, False, True),  # a listed peer has what its row says, whatever the setting
    ]
    stranger, welcome = resolve(closed, "STRANGER", None), resolve(open_, "STRANGER", None)
    assert (stranger.may_find, stranger.may_move, stranger.may_get) == (False, False, False)
    assert (welcome.may_find, welcome.may_move, welcome.may_get) == (True, True, True)
