"""HL7 v2 parsing, escaping, ACKs and the v2 -> FHIR mapping (pure functions), with hypothesis for the parser."""

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message, parse_segments
from hypothesis import example, given, settings
from hypothesis import strategies as st

from integration.errors import BadEncoding, Hl7Error, MappingFailed, NotHl7, UnsupportedEvent
from integration.hl7v2 import VERSIONS, ack, check_header, decode, escape, parse, read_header, unescape
from hl7_listener.message_types import map_message
from storage.fhir.references import patient_resource_id
from tests.mllp_peers import sample

# Text a sender may put in a field: anything printable, delimiters included (they get escaped).
FIELD_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\x7f"), max_size=40)


def test_tolerant_of_crlf_z_segments_and_missing_optional_fields() -> None:
    parsed = parse(sample("adt_a04_v23.hl7"))  # CR LF line ends, PID without optional fields
    assert parsed.header.version == "2.3" and parsed.first("PID") is not None
    assert parse(sample("adt_a08_v24.hl7")).first("ZXX") is not None


def test_segment_unknown_to_the_version_is_refused() -> None:
    omi_in_23 = sample("omi_o23_v251.hl7").replace(b"|P|2.5.1\r", b"|P|2.3\r").replace(b"OMI^O23^OMI_O23", b"ORM^O01")
    with pytest.raises(NotHl7, match="Invalid name for Segment"):  # TQ1 and IPC came with v2.5
        parse(omi_in_23)


def _hl7apy_verdict_kept(raw: bytes) -> None:
    """parse() refuses a message that passes the header rules exactly when hl7apy's tolerant parse does."""
    try:
        check_header(read_header(decode(raw)))
    except Hl7Error:
        return  # refused before hl7apy is asked
    try:
        parse_message(decode(raw), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        hl7apy_takes = True
    except (HL7apyException, ValueError, KeyError, IndexError):  # what parse() turns into an Hl7Error
        hl7apy_takes = False
    try:
        parse(raw)
        we_take = True
    except Hl7Error:
        we_take = False
    assert we_take == hl7apy_takes


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"\rPID|", b"\r \rPID|"),  # a line of blanks between segments
        (b"\rPID|", b"\rpid|"),  # a segment id in lower case
        (b"\rPID|", b"\rPIDX|"),  # four letters: hl7apy reads the first three
        (b"\rPID|", b"\rPI|"),
        (b"\rPID|", b"\rXYZ|1\rPID|"),
        (b"\rPID|", b"\rZ1|1\rPID|"),
        (b"|P|2.3", b"|P|2.3~2.4"),  # MSH-12 repeated
        (b"|P|2.3", b"|P|2.3^X"),
    ],
)
def test_structure_check_refuses_what_a_full_tolerant_hl7apy_parse_refuses(old: bytes, new: bytes) -> None:
    """parse() checks structure from hl7apy's version tables without building its tree: same verdicts."""
    _hl7apy_verdict_kept(sample("adt_a04_v23.hl7").replace(b"\r\n", b"\r").replace(old, new))


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["adt_a04_v23.hl7", "adt_a08_v24.hl7", "omi_o23_v251.hl7", "oru_r01_v251.hl7"]),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2), st.sampled_from(list("|^~\\&\r\n\tZAXP19 "))), max_size=8),
)
def test_structure_check_agrees_with_hl7apy_on_damaged_messages(name: str, edits: list[tuple[int, int, str]]) -> None:
    chars = list(sample(name).decode())
    for position, kind, char in edits:  # insert, replace or delete one character
        at = position % len(chars)
        if kind == 0:
            chars.insert(at, char)
        elif kind == 1:
            chars[at] = char
        elif len(chars) > 1:
            del chars[at]
    _hl7apy_verdict_kept("".join(chars).encode())


def test_header_errors() -> None:
    with pytest.raises(NotHl7):
        read_header("PID|1")
    with pytest.raises(BadEncoding):
        read_header("MSH|^~|A")
    with pytest.raises(UnsupportedEvent):
        parse(sample("adt_a04_v23.hl7").replace(b"ADT^A04", b"ADT^A03"))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("error", [None, MappingFailed("PID-3 is empty", location=("PID", 1, 3))])
def test_acks_pass_strict_validation_in_every_version(version: str, error: Hl7Error | None) -> None:
    header = read_header(decode(sample("adt_a04_v23.hl7").replace(b"|P|2.3", f"|P|{version}".encode())))
    text = ack(header, "AE" if error else "AA", control_id="C1", application="DOCTORAI", facility="AI", error=error)
    message = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    segments = parse_segments(text.decode(), version=version, validation_level=VALIDATION_LEVEL.STRICT)
    message.msh = segments[0]
    for seg in segments[1:]:
        message.add(seg)
    assert message.validate()
    assert f"MSA|{'AE' if error else 'AA'}|ADT0002".encode() in text


@given(FIELD_TEXT)
def test_escape_round_trips(value: str) -> None:
    header = read_header("MSH|^~\\&|A|B|C|D|||ADT^A04|1|P|2.5")
    assert unescape(escape(value), header) == value.replace("\r", "\n")


@settings(max_examples=60, deadline=None)
@given(family=FIELD_TEXT, given_name=FIELD_TEXT, patient_id=st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True))
@example(family="&0", given_name="", patient_id="0")  # an escaped & (\T\) was split as a subcomponent separator
@example(family="Smith & Jones", given_name="Ann", patient_id="P1")
def test_any_escaped_name_maps_back_exactly(family: str, given_name: str, patient_id: str) -> None:
    """Whatever the sender's text, escaped into PID-5 it comes out of the mapping unchanged."""
    family, given_name = family.strip(), given_name.strip()
    pid5 = f"{escape(family)}^{escape(given_name)}"
    raw = f"MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240101||ADT^A04|P1|P|2.5\rPID|1||{patient_id}||{pid5}\r".encode()
    mapped = map_message(parse(raw))
    assert mapped.patient.id == patient_resource_id(patient_id)
    name = mapped.patient.name[0] if mapped.patient.name else None
    if family:
        assert name is not None and name.family == family
    if given_name and name is not None:
        assert given_name in (name.given or [])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_anything_but_an_hl7_error(data: bytes) -> None:
    try:
        parse(b"MSH|^~\\&|" + data)
    except Hl7Error:
        pass


def test_mapping_reports_what_it_did_not_use() -> None:
    mapped = map_message(parse(sample("orm_o01_nw_v23.hl7")))
    assert mapped.orders[0].accession_number == "ACC1001" and mapped.orders[0].status == "active"
    assert mapped.unmapped["ZDS[1]-1.1"] == "1.2.3.4.5.6"
    assert "OBR[1]-18" not in mapped.unmapped and "PID[1]-3.1" not in mapped.unmapped
    # A time without a UTC offset keeps only its date in FHIR; the full value stays in the report.
    assert mapped.unmapped["ORC[1]-9"] == "20240304075900"
    cancel = map_message(parse(sample("orm_o01_ca_v23.hl7")))
    assert cancel.orders[0].status == "revoked"
    assert cancel.orders[0].service_request_id == mapped.orders[0].service_request_id
    omi = map_message(parse(sample("omi_o23_v251.hl7")))
    assert omi.orders[0].accession_number == "ACC3001"  # IPC-1


def test_mapping_needs_a_patient_id() -> None:
    with pytest.raises(MappingFailed, match="PID-3"):
        map_message(parse(sample("bad_no_patient_id.hl7")))
