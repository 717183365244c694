"""Association negotiation as the acceptor: A-ASSOCIATE-RQ in, A-ASSOCIATE-AC or -RJ out (PS3.8 7.1, PS3.7 D.3).

pynetdicom's PDU codecs and its presentation context negotiation do the detailed work; this
module decides what we accept. Every storage SOP class in pynetdicom's list is accepted in every
transfer syntax it knows (uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, RLE, ...), because
instances are stored exactly as received, never transcoded (PS3.4 B.4.1). Verification, MPPS,
Query/Retrieve (FIND, MOVE, GET of the Patient and Study Root models) and Storage Commitment
are accepted in the uncompressed syntaxes, deflated included. docs/dicom-conformance.md lists
them (tests/test_conformance.py compares the two).
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

from pydicom.uid import UID, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_as_acceptor, negotiate_unrestricted
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicom_listener.admission import Refusal
from dicom_listener.errors import ProtocolError
from dicom_listener.pdus import REASON_INVALID_PARAMETER
from integration.instances.spool import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

# PS3.7 A.2.1: the only DICOM application context name.
APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
# Query/Retrieve information models (PS3.4 C.6): the SOP class -> (root, operation).
FIND = {str(PatientRootQueryRetrieveInformationModelFind): "PATIENT", str(StudyRootQueryRetrieveInformationModelFind): "STUDY"}
MOVE = {str(PatientRootQueryRetrieveInformationModelMove): "PATIENT", str(StudyRootQueryRetrieveInformationModelMove): "STUDY"}
GET = {str(PatientRootQueryRetrieveInformationModelGet): "PATIENT", str(StudyRootQueryRetrieveInformationModelGet): "STUDY"}
STORAGE_COMMITMENT = str(StorageCommitmentPushModel)


@dataclass(frozen=True)
class Request:
    """What an A-ASSOCIATE-RQ asks for."""

    calling_ae: str
    called_ae: str
    # The longest P-DATA-TF PDU the requestor takes from us (PS3.8 D.1); 0 = no limit.
    peer_max_pdu: int
    version_supported: bool
    primitive: A_ASSOCIATE


@dataclass(frozen=True)
class Context:
    """An accepted presentation context; `as_scu`: we may send requests on it (C-STORE for a C-GET, PS3.7 D.3.3.4)."""

    abstract_syntax: str
    transfer_syntax: str
    as_scu: bool = False


@lru_cache
def storage_sop_classes() -> frozenset[str]:
    """The storage SOP classes we accept (pynetdicom's list), in every transfer syntax it knows."""
    return frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


@lru_cache
def supported() -> dict[str, frozenset[str]]:
    """Every SOP class we accept, with the transfer syntaxes we accept it in."""
    syntaxes = frozenset(ALL_TRANSFER_SYNTAXES)
    accepted = {sop_class: syntaxes for sop_class in storage_sop_classes()}
    # Verification, MPPS (PS3.4 F.7), Query/Retrieve (C.6) and Storage Commitment (J.3): small
    # data sets in pynetdicom's default syntaxes (Implicit and Explicit VR Little Endian,
    # Deflated Explicit VR Little Endian, Explicit VR Big Endian).
    others = (Verification, ModalityPerformedProcedureStep, STORAGE_COMMITMENT, *FIND, *MOVE, *GET)
    for sop_class in others:
        accepted[str(sop_class)] = frozenset(build_context(sop_class).transfer_syntax)
    return accepted


def _acceptable(proposed: list[PresentationContext], *, storage_roles: bool) -> list[PresentationContext]:
    """What we support of each proposed abstract syntax, in the requestor's order of transfer syntaxes.

    pynetdicom accepts the first of *our* list that the requestor proposed; we take the first the
    requestor proposed that we support. That is the syntax it prefers, normally the one its data
    is in, so it need not convert anything before sending (dcmtk's storescu otherwise re-encodes
    every dataset to Implicit VR Little Endian).

    `storage_roles`: we may take either role for storage SOP classes, so a role selection item
    proposing the SCP role for the requestor (a C-GET SCU receiving our C-STOREs) is answered.
    """
    ours = supported()
    storage = storage_sop_classes()
    # Per abstract syntax (it may be proposed in several contexts), every syntax in order of proposal.
    ordered: dict[str, list[str]] = {}
    for cx in proposed:
        abstract = str(cx.abstract_syntax)
        syntaxes = ordered.setdefault(abstract, [])
        syntaxes += [str(ts) for ts in cx.transfer_syntax if str(ts) in ours.get(abstract, ()) and str(ts) not in syntaxes]
    acceptable = []
    for abstract, syntaxes in ordered.items():
        if syntaxes:
            context = build_context(abstract, syntaxes)
            if storage_roles and abstract in storage:
                context.scu_role = context.scp_role = True
            acceptable.append(context)
    return acceptable


def decode_request(pdu: bytes) -> Request:
    """Decode an A-ASSOCIATE-RQ PDU (header included). Raises ProtocolError when it is malformed."""
    rq = A_ASSOCIATE_RQ()
    try:
        rq.decode(pdu)
        primitive = rq.to_primitive()
    except Exception as exc:  # noqa: BLE001
        # pynetdicom's decoder fails on malformed items in many ways (assertions, struct.error,
        # KeyError, pydicom's warnings turned errors): each is a malformed PDU, aborted with
        # invalid-PDU-parameter-value (PS3.8 9.3.8), logged as one line with no traceback or bytes.
        raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {type(exc).__name__}", reason=REASON_INVALID_PARAMETER) from None
    max_pdu = next(
        (int(i.maximum_length_received) for i in primitive.user_information if isinstance(i, MaximumLengthNotification)), 0
    )
    return Request(
        calling_ae=str(primitive.calling_ae_title).strip(),
        called_ae=str(primitive.called_ae_title).strip(),
        peer_max_pdu=max_pdu,
        # PS3.8 9.3.2: bit 0 set is protocol version 1, the only one.
        version_supported=bool(rq.protocol_version & 0x01),
        primitive=primitive,
    )


def check(request: Request, ae_title: str) -> Refusal | None:
    """Refusals that do not depend on who is calling (PS3.8 9.3.4, Table 9-21)."""
    if not request.version_supported:
        return Refusal(0x01, 0x02, 0x02, "protocol version not supported")
    if str(request.primitive.application_context_name) != APPLICATION_CONTEXT_NAME:
        return Refusal(0x01, 0x01, 0x02, "application context name not supported")
    if request.called_ae != ae_title:
        return Refusal(0x01, 0x01, 0x07, f"called AE title {request.called_ae[:16]!r} not recognised")
    if not request.primitive.presentation_context_definition_list:
        # PS3.8 9.3.2 requires one or more presentation context items; without one nothing can be
        # negotiated: rejected-permanent, service-user, no-reason-given (PS3.8 9.3.4, Table 9-21).
        return Refusal(0x01, 0x01, 0x01, "no presentation context proposed")
    return None


def _without_syntaxes(proposed: PresentationContext) -> PresentationContext:
    """The answer to a context proposed with no Transfer Syntax sub-item, which PS3.8 9.3.2.2 requires
    one or more of: transfer-syntaxes-not-supported (provider rejection, result 4). The AC's item
    still carries one, which PS3.8 9.3.3.2 says is not significant when the context is not accepted."""
    answer = PresentationContext()
    answer.context_id = proposed.context_id
    answer.abstract_syntax = proposed.abstract_syntax
    answer.transfer_syntax = [ImplicitVRLittleEndian]
    answer.result = 0x04
    return answer


def accept(request: Request, *, max_pdu: int, unrestricted: bool) -> tuple[bytes, dict[int, Context]]:
    """The A-ASSOCIATE-AC PDU for `request`, and the contexts it accepts by ID.

    Roles: when the requestor proposes a C-GET SOP class, its role selection items for storage
    SOP classes are answered, so that we may send it the C-STOREs of its C-GETs (PS3.7
    D.3.3.4, PS3.4 C.4.3.3); otherwise role selection items get no reply and the default roles
    hold, the requestor SCU and us SCP. Asynchronous operations: we perform one at a time (PS3.7
    D.3.3.3). User identity and extended negotiation items (relational queries, combined
    date-time matching, ...) are not supported and so, as PS3.7 D.3.3.5-7 permits, not answered.
    """
    primitive = request.primitive
    roles = {
        cast(UID, i.sop_class_uid): (i.scu_role, i.scp_role)
        for i in primitive.user_information
        if isinstance(i, SCP_SCU_RoleSelectionNegotiation)
    }
    negotiate = negotiate_unrestricted if unrestricted else negotiate_as_acceptor
    proposed = [cx for cx in primitive.presentation_context_definition_list if cx.transfer_syntax]
    getting = any(str(cx.abstract_syntax) in GET for cx in proposed)
    results, role_replies = negotiate(proposed, _acceptable(proposed, storage_roles=getting), roles)
    results += [_without_syntaxes(cx) for cx in primitive.presentation_context_definition_list if not cx.transfer_syntax]
    # We act as SCU on a context only when role selection gave us that role (PS3.7 D.3.3.4).
    accepted = {
        int(cx.context_id): Context(str(cx.abstract_syntax), str(cx.transfer_syntax[0]), bool(cx.as_scu) and cx.abstract_syntax in roles)
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    ac = A_ASSOCIATE()
    ac.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    ac.calling_ae_title = primitive.calling_ae_title
    ac.called_ae_title = primitive.called_ae_title
    ac.result = 0x00
    ac.result_source = 0x01
    ac.presentation_context_definition_results_list = results
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    items: list[object] = [maximum, implementation, version, *role_replies]
    if any(isinstance(i, AsynchronousOperationsWindowNegotiation) for i in primitive.user_information):
        items.append(AsynchronousOperationsWindowNegotiation())  # 1 invoked, 1 performed
    ac.user_information = items  # type: ignore[assignment]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    return pdu.encode(), accepted
