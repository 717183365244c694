"""HL7 v2 messages in and acknowledgements out: header, tolerant parse, field access, ACK (HL7 v2 chapter 2).

hl7apy checks each message as its tolerant parser would (delimiters and version as it reads
MSH, every segment known to that version, Z-segments allowed), from its version tables and without
building the element tree: in tolerant mode that tree rejects nothing more, and building it cost
several milliseconds a message that nobody read. Values are read from the ER7 text with the
message's own delimiters, because hl7apy's tree drops the positions of empty components in
Z-segments and re-escapes formatting sequences; positions must be exact for the unmapped report.
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache

from hl7apy import check_version
from hl7apy import exceptions as hl7apy_errors
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Segment as Hl7apySegment
from hl7apy.parser import get_message_info

from integration.errors import (
    BadEncoding,
    Hl7Error,
    NotHl7,
    UnsupportedEvent,
    UnsupportedMessageType,
    UnsupportedProcessingId,
    UnsupportedVersion,
)

# The versions taken in (HL7 v2.3 to v2.5.1); ORU^R01 out is always 2.5.1.
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
# Message type -> trigger events this engine maps (ADT, ORM/OMI orders, ORU results).
EVENTS: dict[str, tuple[str, ...]] = {
    "ADT": ("A01", "A04", "A08", "A31", "A40"),
    "ORM": ("O01",),
    "OMI": ("O23",),
    "ORU": ("R01",),
}
# HL7 table 0103 processing ids.
PROCESSING_IDS = ("P", "D", "T")
# MSH-15/MSH-16 values (HL7 table 0155): always, never, error/reject only, successful only.
ACK_CONDITIONS = ("AL", "NE", "ER", "SU")


@dataclass(frozen=True)
class Header:
    """The MSH fields that decide how a message is taken and answered (HL7 v2 2.14.9)."""

    field_separator: str
    encoding: str  # MSH-2: component, repetition, escape, subcomponent
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str

    @property
    def enhanced_mode(self) -> bool:
        """Enhanced acknowledgement mode: MSH-15 or MSH-16 valued (HL7 v2 2.9.3)."""
        return bool(self.accept_ack_type or self.application_ack_type)


@dataclass(frozen=True)
class Segment:
    """One segment: its id, its occurrence in the message (1-based) and its fields.

    parts[n-1] is field n as repetitions, each repetition a tuple of components, each component a
    tuple of its subcomponents, each unescaped on its own: an escaped delimiter (\\T\\ for the
    subcomponent separator, HL7 v2 2.7.1) is data and never splits a value.
    """

    name: str
    occurrence: int
    parts: tuple[tuple[tuple[tuple[str, ...], ...], ...], ...]
    subcomponent_separator: str = "&"

    @cached_property
    def fields(self) -> tuple[tuple[tuple[str, ...], ...], ...]:
        """fields[n-1] is field n as repetitions of components, each component's subcomponents joined by
        the message's separator: text to show or store, not to split (subcomponent() reads one)."""
        joined = self.subcomponent_separator.join
        return tuple(tuple(tuple(joined(subs) for subs in rep) for rep in reps) for reps in self.parts)

    def value(self, position: int, component: int = 1, repetition: int = 1) -> str:
        """One component of one repetition of a field, or "" when absent."""
        if position < 1 or position > len(self.fields):
            return ""
        reps = self.fields[position - 1]
        if repetition > len(reps):
            return ""
        comps = reps[repetition - 1]
        return comps[component - 1] if component <= len(comps) else ""

    def subcomponent(self, position: int, component: int, index: int, repetition: int = 1) -> str:
        """One subcomponent of a component (split at MSH-2's fourth character), or "" when absent."""
        if position < 1 or position > len(self.parts) or repetition > len(reps := self.parts[position - 1]):
            return ""
        comps = reps[repetition - 1]
        subs = comps[component - 1] if component <= len(comps) else ()
        return subs[index - 1] if index <= len(subs) else ""

    def repetitions(self, position: int) -> int:
        """How many repetitions field `position` has."""
        return len(self.fields[position - 1]) if 0 < position <= len(self.fields) else 0


@dataclass(frozen=True)
class Parsed:
    """A message taken in: its header and its segments in order."""

    header: Header
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def all(self, name: str) -> list[Segment]:
        """Every segment with this id, in order."""
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        """The first segment with this id, if any."""
        return next((s for s in self.segments if s.name == name), None)


def decode(raw: bytes) -> str:
    """Message text with segments ended by CR only; UTF-8, else ISO 8859-1 (which decodes any byte)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    # Segments end in CR (HL7 v2 2.5.2); senders often use CR LF or LF: accept all three.
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")


def _delimiters_ok(separator: str, encoding: str) -> bool:
    chars = separator + encoding
    return (
        len(encoding) == 4
        and len(set(chars)) == 5
        and not any(c.isalnum() or c.isspace() for c in chars)
    )


def read_header(text: str) -> Header:
    """The MSH fields, read by hand so even a message hl7apy refuses can be answered."""
    if not text.startswith("MSH") or len(text) < 8:
        raise NotHl7("the message does not start with an MSH segment", location=("MSH", 1, 0))
    separator = text[3]
    msh = text.split("\r", 1)[0]
    fields = msh.split(separator)
    encoding = fields[1] if len(fields) > 1 else ""
    if not _delimiters_ok(separator, encoding):
        raise BadEncoding("MSH-1/MSH-2 are not five distinct delimiters", location=("MSH", 1, 2))
    component = encoding[0]

    def get(position: int, comp: int = 1) -> str:
        # MSH-1 is the separator itself, so MSH-n is fields[n - 1].
        value = fields[position - 1] if position - 1 < len(fields) else ""
        parts = value.split(encoding[1])[0].split(component)
        return parts[comp - 1].strip() if comp <= len(parts) else ""

    return Header(
        field_separator=separator,
        encoding=encoding,
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
        message_type=get(9).upper(),
        trigger_event=get(9, 2).upper(),
        control_id=get(10),
        processing_id=get(11).upper(),
        version=get(12),
        accept_ack_type=get(15).upper(),
        application_ack_type=get(16).upper(),
    )


def check_header(header: Header) -> None:
    """Refuse what this engine does not take: unknown type, event, processing id or version."""
    if header.message_type not in EVENTS:
        raise UnsupportedMessageType(f"message type {header.message_type!r} is not taken", location=("MSH", 1, 9))
    if header.trigger_event not in EVENTS[header.message_type]:
        raise UnsupportedEvent(
            f"{header.message_type}^{header.trigger_event!r} is not taken", location=("MSH", 1, 9)
        )
    if header.processing_id and header.processing_id not in PROCESSING_IDS:
        raise UnsupportedProcessingId(f"processing id {header.processing_id!r}", location=("MSH", 1, 11))
    if header.version not in VERSIONS:
        raise UnsupportedVersion(
            f"version {header.version!r}; taken: {', '.join(VERSIONS)}", location=("MSH", 1, 12)
        )
    if not header.control_id:
        raise NotHl7("MSH-10 (message control id) is empty", location=("MSH", 1, 10))


def unescape(value: str, header: Header) -> str:
    """Replace HL7 escape sequences (HL7 v2 2.7) with the characters they stand for."""
    esc = header.encoding[2]
    if esc not in value:
        return value
    names = {
        "F": header.field_separator,
        "S": header.encoding[0],
        "R": header.encoding[1],
        "E": esc,
        "T": header.encoding[3],
        ".br": "\n",
    }

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in names:
            return names[code]
        if code.startswith("X") and len(code) > 1:
            try:
                return bytes.fromhex(code[1:]).decode("latin-1")
            except ValueError:
                return match.group(0)
        return ""  # formatting (\H\, \N\, \.sp\ ...) and charset switches carry no text

    return re.sub(re.escape(esc) + r"([^" + re.escape(esc) + r"]*)" + re.escape(esc), replace, value)


def escape(value: str, encoding: str = "^~\\&", separator: str = "|") -> str:
    """Escape delimiters in a value written into a message (HL7 v2 2.7.1), escape character first."""
    component, repetition, esc, sub = encoding[0], encoding[1], encoding[2], encoding[3]
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((separator, "F"), (component, "S"), (repetition, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", f"{esc}.br{esc}").replace("\n", f"{esc}.br{esc}")


def _segments(text: str, header: Header) -> tuple[Segment, ...]:
    sub = header.encoding[3]
    seen: dict[str, int] = {}
    out = []
    for line in text.split("\r"):
        if not line.strip():
            continue
        name, _, rest = line.partition(header.field_separator)
        seen[name] = seen.get(name, 0) + 1
        if name == "MSH":
            # MSH-1 is the separator and MSH-2 the delimiters: they are not split like data.
            raw_fields = [header.field_separator, header.encoding, *rest.split(header.field_separator)[1:]]
            parts = tuple((((f,),),) if i < 2 else _split(f, header) for i, f in enumerate(raw_fields))
        else:
            parts = tuple(_split(f, header) for f in rest.split(header.field_separator)) if rest else ()
        out.append(Segment(name=name, occurrence=seen[name], parts=parts, subcomponent_separator=sub))
    return tuple(out)


def _split(value: str, header: Header) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """A field's repetitions, components and subcomponents; each unescaped once split (HL7 v2 2.7)."""
    if not value:
        return ()
    component, repetition, sub = header.encoding[0], header.encoding[1], header.encoding[3]
    return tuple(
        tuple(tuple(unescape(s, header) for s in c.split(sub)) for c in rep.split(component))
        for rep in value.split(repetition)
    )


@lru_cache(maxsize=1024)  # known names and versions are few; a sender's made-up Z-names stay bounded
def _known_segment(name: str, version: str) -> None:
    """Raise hl7apy's InvalidName unless `version` defines segment `name` or it is a Z-segment."""
    Hl7apySegment(name, version=version, validation_level=VALIDATION_LEVEL.TOLERANT)


def _check_structure(text: str) -> None:
    """What hl7apy's tolerant `parse_message(find_groups=False)` checks, without its element tree.

    Raises hl7apy's exceptions, as that parse would: delimiters and MSH-12 as hl7apy reads them,
    then each segment's name (the first three characters of every non-empty line, stripped).
    """
    _, _, version = get_message_info(text)
    check_version(version)
    for line in text.split("\r"):
        if line:
            _known_segment(line.strip()[:3], version)


def parse(raw: bytes) -> Parsed:
    """Read and check one message: header rules first, then hl7apy's tolerant structure check.

    Raises an Hl7Error subclass naming what is wrong; never anything else.
    """
    text = decode(raw)
    header = read_header(text)
    check_header(header)
    try:
        _check_structure(text)
    except hl7apy_errors.InvalidEncodingChars as exc:
        raise BadEncoding(str(exc), location=("MSH", 1, 2)) from exc
    except hl7apy_errors.UnsupportedVersion as exc:
        raise UnsupportedVersion(str(exc), location=("MSH", 1, 12)) from exc
    except (hl7apy_errors.HL7apyException, ValueError, KeyError, IndexError) as exc:
        # hl7apy names the offending segment (e.g. a segment unknown to this version).
        raise NotHl7(f"not a well-formed {header.version} message: {exc}") from exc
    return Parsed(header=header, segments=_segments(text, header))


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def ack(
    header: Header,
    code: str,
    *,
    control_id: str,
    application: str,
    facility: str,
    error: Hl7Error | None = None,
    now: datetime | None = None,
    enhanced: bool = False,
) -> bytes:
    """An ACK answering `header`'s message with MSA-1 `code` (AA/AE/AR or CA/CE/CR) and, on error, ERR.

    MSA-2 is the original MSH-10 (HL7 v2 2.9.2). The ERR layout follows the message's version:
    ERR-1 (ELD) up to 2.4, ERR-2/3/4/8 from 2.5 (HL7 v2.5 2.15.5). `enhanced` sets MSH-15 AL and
    MSH-16 NE: an application ACK sent as a message of its own asks only for a commit ACK.
    """
    version = header.version if header.version in VERSIONS else "2.5.1"
    structure = "" if version == "2.3" else "^ACK"  # MSH-9.3 exists from 2.3.1
    trigger = escape(header.trigger_event)
    msh = (
        f"MSH|^~\\&|{escape(application)}|{escape(facility)}|{escape(header.sending_application)}|"
        f"{escape(header.sending_facility)}|{_timestamp(now or datetime.now(UTC))}||ACK^{trigger}{structure}|"
        f"{escape(control_id)}|{header.processing_id if header.processing_id in PROCESSING_IDS else 'P'}|{version}"
    )
    if enhanced:
        msh += "|||AL|NE"  # MSH-13 and MSH-14 empty
    text = ""
    if error is not None:
        text = escape(str(error))[:80]
    legacy = version in ("2.3", "2.3.1", "2.4")
    msa = f"MSA|{code}|{escape(header.control_id)}" + (f"|{text}" if legacy and text else "")
    segments = [msh, msa]
    if error is not None:
        segment, sequence, position = error.location or ("", 0, 0)
        where = f"{segment}^{sequence or ''}^{position or ''}" if segment else ""
        if legacy:
            segments.append(f"ERR|{where}^{error.error_code}&{escape(error.error_text)}&HL70357")
        else:
            segments.append(
                f"ERR||{where}|{error.error_code}^{escape(error.error_text)}^HL70357|E||||{text}"
            )
    return ("\r".join(segments) + "\r").encode()


def minimal_header() -> Header:
    """The header of a message whose MSH cannot be read: enough to address a rejection."""
    return Header(
        field_separator="|",
        encoding="^~\\&",
        sending_application="",
        sending_facility="",
        receiving_application="",
        receiving_facility="",
        message_type="",
        trigger_event="",
        control_id="",
        processing_id="P",
        version="2.5.1",
        accept_ack_type="",
        application_ack_type="",
    )
