"""Association negotiation as acceptor: the requestor's preferred syntax, several contexts per SOP class,
unknown SOP classes, role selection, asynchronous operations, and the refusals of PS3.8 Table 9-21."""

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context

from dicom_listener import negotiation
from tests.dicom_listener.conftest import associate_rq

CT = "1.2.840.10008.5.1.4.1.1.2"
PRIVATE = "1.2.826.0.1.3680043.8.498.1"


def _accept(rq: bytes, *, unrestricted: bool = False) -> tuple[A_ASSOCIATE, dict[int, negotiation.Context]]:
    request = negotiation.decode_request(rq)
    assert request.peer_max_pdu == 32768 and request.calling_ae == "MODALITY"
    ac, contexts = negotiation.accept(request, max_pdu=65536, unrestricted=unrestricted)
    decoded = A_ASSOCIATE_AC()
    decoded.decode(ac)
    return decoded.to_primitive(), contexts


def test_the_syntax_the_requestor_proposes_first_is_taken() -> None:
    rq = associate_rq([build_context(CT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]), build_context(CT, [JPEG2000Lossless])])
    ac, contexts = _accept(rq)
    assert contexts == {
        1: negotiation.Context(CT, ExplicitVRLittleEndian),  # not Implicit VR: the sender need not convert
        3: negotiation.Context(CT, JPEG2000Lossless),  # a second context for the same SOP class
    }
    maximum = [i for i in ac.user_information if isinstance(i, MaximumLengthNotification)]
    assert maximum[0].maximum_length_received == 65536


def test_unknown_sop_classes_are_a_setting() -> None:
    rq = associate_rq([build_context(PRIVATE, [JPEGLSLossless]), build_context(CT, [ImplicitVRLittleEndian])])
    ac, contexts = _accept(rq)
    assert list(contexts) == [3]
    results = {cx.context_id: cx.result for cx in ac.presentation_context_definition_results_list}
    assert results == {1: 0x03, 3: 0x00}  # abstract-syntax-not-supported (PS3.8 9.3.3.2)
    _, contexts = _accept(rq, unrestricted=True)
    assert contexts[1] == negotiation.Context(PRIVATE, JPEGLSLossless)


def test_role_selection_keeps_the_default_roles_and_one_operation_at_a_time() -> None:
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid, role.scu_role, role.scp_role = UID(CT), True, True
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = window.maximum_number_operations_performed = 5
    ac, contexts = _accept(associate_rq([build_context(CT, [ExplicitVRLittleEndian])], extra=[role, window]))
    assert contexts[1].transfer_syntax == ExplicitVRLittleEndian
    (async_reply,) = [i for i in ac.user_information if isinstance(i, AsynchronousOperationsWindowNegotiation)]
    assert (async_reply.maximum_number_operations_invoked, async_reply.maximum_number_operations_performed) == (1, 1)
    # No role reply: the default roles hold, the requestor SCU and us SCP, as storage needs (PS3.7 D.3.3.4).
    assert not [i for i in ac.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)]


def test_refusals_that_do_not_depend_on_the_caller() -> None:
    wrong_called = negotiation.decode_request(associate_rq([build_context(CT)], called="ELSEWHERE"))
    refusal = negotiation.check(wrong_called, "DOCTORAI")
    assert refusal is not None and (refusal.result, refusal.source, refusal.reason) == (1, 1, 7)
    rq = bytearray(associate_rq([build_context(CT)]))
    rq[6:8] = b"\x00\x02"  # protocol version 2 only
    refusal = negotiation.check(negotiation.decode_request(bytes(rq)), "DOCTORAI")
    assert refusal is not None and (refusal.result, refusal.source, refusal.reason) == (1, 2, 2)
    assert negotiation.check(negotiation.decode_request(associate_rq([build_context(CT)])), "DOCTORAI") is None
