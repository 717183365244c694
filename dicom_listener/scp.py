"""The Application Entity: which presentation contexts we accept and how we listen."""

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine

from dicom_listener import handlers
from dicom_listener.config import DicomSettings
from storage.objects import ObjectStore


def make_ae(settings: DicomSettings) -> AE:
    """An AE accepting Verification and every storage SOP class in every transfer syntax.

    Instances are stored exactly as received, never transcoded, so accepting a compressed
    syntax costs nothing here (PS3.4 Annex B.4.1: the SCP stores without alteration).
    """
    ae = AE(ae_title=settings.dicom_ae_title)
    # Check the called AE title (PS3.8 9.3.4: reject with reason "called AE title not recognized").
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    return ae


def start(
    ae: AE, settings: DicomSettings, *, store: ObjectStore, engine: Engine, seen: handlers.StudiesSeen
) -> ThreadedAssociationServer:
    """Listen in the background; each association gets its own thread, as pynetdicom does."""
    bound = [
        (evt.EVT_C_ECHO, handlers.handle_echo),
        (evt.EVT_C_STORE, handlers.handle_store, [store, engine, seen, settings.dicom_ae_title]),
        (evt.EVT_ACCEPTED, handlers.handle_accepted),
        (evt.EVT_REJECTED, handlers.handle_rejected, [engine, settings.dicom_ae_title]),
        (evt.EVT_RELEASED, handlers.handle_released, [seen]),
        (evt.EVT_ABORTED, handlers.handle_released, [seen]),
    ]
    server = ae.start_server((settings.dicom_host, settings.dicom_port), block=False, evt_handlers=bound)
    assert server is not None  # block=False always returns the server
    return server
