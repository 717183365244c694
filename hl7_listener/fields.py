"""Reading v2 fields for the FHIR mapping while recording which ones it used, and the unmapped report.

Paths in the report read `SEG[occurrence]-field[repetition].component`, with the repetition and
component left out when the field has only one (e.g. `PID[1]-19`, `PID[1]-3[2].4`).
"""

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage import fhir
from integration.hl7v2 import Parsed, Segment

# Coding systems named in CWE/CE.3 (HL7 table 0396) that FHIR knows by URI.
_SYSTEMS = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "RADLEX": "http://radlex.org",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "UCUM": "http://unitsofmeasure.org",
}
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
# HL7 v2 DTM: YYYY[MM[DD[HHMM[SS[.S+]]]]][+/-ZZZZ] (HL7 v2.5 2A.3.22).
_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})(\d{2})?(?:\.\d+)?)?([+-]\d{4})?")


@dataclass
class Usage:
    """The fields of one message that the mapping read; everything else is reported as unmapped."""

    parsed: Parsed
    used: set[tuple[str, int, int, int, int]] = field(default_factory=set)

    def get(self, seg: Segment, position: int, component: int = 1, repetition: int = 1) -> str:
        """A component's value, marked as used."""
        self.used.add((seg.name, seg.occurrence, position, repetition, component))
        return seg.value(position, component, repetition).strip()

    def subcomponent(self, seg: Segment, position: int, component: int, index: int, repetition: int = 1) -> str:
        """One subcomponent's value; its component is marked as used."""
        self.used.add((seg.name, seg.occurrence, position, repetition, component))
        return seg.subcomponent(position, component, index, repetition).strip()

    # FHIR date/dateTime text: fhir.resources validates it, but its annotations name only date and
    # datetime, hence Any (as results.mapping does for ImagingStudy.started).
    def datetime(self, seg: Segment, position: int, component: int = 1) -> Any:
        """A DTM/TS component as FHIR dateTime; left in the unmapped report when its time had to be dropped."""
        raw = self.get(seg, position, component)
        value = fhir_datetime(raw)
        if value is None or (len(raw) > 8 and "T" not in value):
            self.used.discard((seg.name, seg.occurrence, position, 1, component))
        return value

    def date(self, seg: Segment, position: int) -> Any:
        """A DT/DTM component's date as FHIR date; left in the unmapped report when it is not a date."""
        value = fhir_date(self.get(seg, position))
        if value is None:
            self.used.discard((seg.name, seg.occurrence, position, 1, 1))
        return value

    def whole(self, seg: Segment, position: int) -> None:
        """Mark every repetition and component of a field as used."""
        self.used.add((seg.name, seg.occurrence, position, 0, 0))

    def segment(self, seg: Segment) -> None:
        """Mark a whole segment as used (structural segments such as EVN's trigger echo)."""
        self.used.add((seg.name, seg.occurrence, 0, 0, 0))

    def unmapped(self) -> dict[str, str]:
        """Path -> value of every populated component nobody read."""
        report: dict[str, str] = {}
        for seg in self.parsed.segments:
            if (seg.name, seg.occurrence, 0, 0, 0) in self.used:
                continue
            for position, reps in enumerate(seg.fields, start=1):
                if (seg.name, seg.occurrence, position, 0, 0) in self.used:
                    continue
                for rep_no, comps in enumerate(reps, start=1):
                    for comp_no, value in enumerate(comps, start=1):
                        if not value.strip() or (seg.name, seg.occurrence, position, rep_no, comp_no) in self.used:
                            continue
                        path = f"{seg.name}[{seg.occurrence}]-{position}"
                        path += f"[{rep_no}]" if len(reps) > 1 else ""
                        path += f".{comp_no}" if len(comps) > 1 else ""
                        report[path] = value
        return report


def hashed_id(prefix: str, *parts: str) -> str:
    """A FHIR id (at most 64 characters) derived from identifiers, stable across re-sends."""
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def fhir_datetime(value: str) -> str | None:
    """A v2 DTM/TS as FHIR dateTime text; a time without a UTC offset keeps only its date.

    FHIR requires an offset whenever a time is given (http://hl7.org/fhir/R4/datatypes.html#dateTime)
    and guessing the sender's zone could shift the instant, so the date alone is kept.
    """
    match = _DTM.fullmatch(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        datetime.strptime(f"{year}{month or '01'}{day or '01'}", "%Y%m%d")
    except ValueError:
        return None  # e.g. a 52nd of March: left in the unmapped report
    date = "-".join(p for p in (year, month, day) if p)
    if hour is None or offset is None or day is None:
        return date
    return f"{date}T{hour}:{minute}:{second or '00'}{offset[:3]}:{offset[3:]}"


def fhir_date(value: str) -> str | None:
    """The date part of a v2 DTM/TS/DT as FHIR date text."""
    return fhir_datetime(value.strip()[:8])


def _coding_system(name: str) -> str | None:
    if name.upper() in _SYSTEMS:
        return _SYSTEMS[name.upper()]
    # A local table name becomes a URN; anything that could not be one (spaces...) is left out.
    return f"urn:doctorai:v2-coding-system:{name}" if _TABLE_NAME.fullmatch(name) else None


def coding(u: Usage, seg: Segment, position: int, repetition: int = 1) -> fhir.CodeableConcept | None:
    """A CWE/CE field (code^text^system, alternate in 4-6) as a CodeableConcept."""
    codings = []
    for first in (1, 4):
        code = u.get(seg, position, first, repetition)
        text = u.get(seg, position, first + 1, repetition)
        system = u.get(seg, position, first + 2, repetition)
        if code or text:
            codings.append(
                fhir.Coding(
                    system=_coding_system(system),
                    code=code or None,
                    display=text or None,
                )
            )
    if not codings:
        return None
    return fhir.CodeableConcept(coding=codings, text=codings[0].display or codings[0].code)


def entity_id(u: Usage, seg: Segment, position: int) -> str:
    """An EI field (entity id^namespace^universal id^type) as one comparable string."""
    parts = [u.get(seg, position, c) for c in (1, 2, 3, 4)]
    return "^".join(parts).rstrip("^")


def person_name(u: Usage, seg: Segment, position: int, *, xcn: bool = False) -> str:
    """An XPN (family^given^middle) or XCN (id^family^given) as display text."""
    offset = 1 if xcn else 0
    parts = [u.get(seg, position, offset + 2), u.get(seg, position, offset + 3), u.get(seg, position, offset + 1)]
    return " ".join(p for p in parts if p)
