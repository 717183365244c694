"""The facts routing rules read about one stored study: its index rows, its linked order and,
only when a rule matches header tags, the header of each series' first instance."""

import io
import logging
import struct

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from sqlalchemy.orm import Session

from integration.messages import InstanceRef
from integration.rules import SeriesFacts, StudyFacts
from storage import fhir
from storage.fhir import store
from storage.errors import ObjectTooLarge
from storage.objects import ObjectStore
from storage.orders import order_for_study
from storage.instances import study_instances
from storage.tables.index import Instance, Series, Study

log = logging.getLogger(__name__)

# Headers are read from the start of the object; most fit in far less (the rest is pixel data).
HEADER_BYTES = 256 * 1024
# A header (the elements before the pixel data) longer than this is not read into memory: the
# routing of its study fails saying so (ObjectTooLarge, dead-lettered) instead. Real headers,
# private elements and embedded overlays included, are well under it.
MAX_HEADER_BYTES = 64 * 1024 * 1024
# Elements whose value ends the header: Pixel Data and its float variants (PS3.5 7.5, PS3.3 C.7.6.3).
_BULK_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
# Value representations that hold bytes or items, not text (PS3.5 6.2): no regular expression reads them.
_NOT_TEXT = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UN"}


def _order_codes(session: Session, service_request_id: str) -> tuple[str, ...]:
    """The codes of ServiceRequest.code (FHIR R4 CodeableConcept.coding) of a stored order."""
    found = store.read_stored(session, [f"ServiceRequest/{service_request_id}"])
    if not found:
        return ()
    code = fhir.ServiceRequest.model_validate_json(found[0].content).code
    codings = code.coding if code is not None and code.coding else []
    return tuple(str(c.code) for c in codings if c.code)


def _series(series: Series, instances: list[Instance]) -> SeriesFacts:
    return SeriesFacts(
        series_uid=series.series_uid,
        modality=series.modality,
        body_part=series.body_part,
        series_description=series.series_description,
        sop_classes=tuple(dict.fromkeys(i.sop_class_uid for i in instances)),
        instances=tuple(
            InstanceRef(
                series_uid=series.series_uid,
                sop_uid=i.sop_uid,
                sop_class_uid=i.sop_class_uid,
                modality=series.modality,
                body_part=series.body_part,
                instance_number=i.instance_number,
                object_key=i.object_key,
            )
            for i in instances
        ),
    )


def study_facts(session: Session, study: Study, *, reason: str) -> StudyFacts:
    """The facts of a study from the index and its order (linking the order by accession number
    when it is not linked yet); series tags are left empty (see `with_tags`)."""
    grouped: dict[str, tuple[Series, list[Instance]]] = {}
    for instance, series in study_instances(session, study_uid=study.study_uid):
        grouped.setdefault(series.series_uid, (series, []))[1].append(instance)
    order = order_for_study(session, study=study)
    return StudyFacts(
        study_uid=study.study_uid,
        calling_ae=study.calling_ae,
        called_ae=study.called_ae,
        source_address=study.source_address,
        study_description=study.study_description,
        has_order=order is not None,
        order_codes=_order_codes(session, order.service_request_id) if order is not None else (),
        reason=reason,
        series=tuple(_series(series, instances) for series, instances in grouped.values()),
    )


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)  # multiple values as encoded, backslash-separated (PS3.5 6.4)
    return str(value)


def header_tags(ds: Dataset) -> dict[str, str]:
    """Every top-level text element of a header by 8-hex-digit tag, multiple values joined by "\\"."""
    return {f"{e.tag:08X}": _text(e.value) for e in ds if e.VR not in _NOT_TEXT}


def _header_complete(stream: io.BytesIO, ds: Dataset) -> bool:
    """True when the parse stopped at bulk pixel data, not at the end of a cut-short prefix."""
    following = stream.read(4)
    if len(following) < 4:
        return False
    endian = "<" if ds.original_encoding[1] is not False else ">"
    group, element = struct.unpack(endian + "HH", following)
    return (group << 16 | element) in _BULK_TAGS


def read_header(objects: ObjectStore, key: str) -> Dataset:
    """The header of a stored instance without its pixel data, read leniently (CONVENTIONS rule 8).

    The first HEADER_BYTES usually hold it; pydicom reads a prefix cut inside the header as a
    shorter dataset without complaint, so an incomplete one is read again, up to MAX_HEADER_BYTES
    (storage.errors.ObjectTooLarge past it: the header is not cut where pixel data starts).
    """
    start = objects.get_start(key, length=HEADER_BYTES)
    if len(start) == HEADER_BYTES:
        stream = io.BytesIO(start)
        ds = dcmread(stream, stop_before_pixels=True, force=True)
        if _header_complete(stream, ds):
            return ds
        start = objects.get_start(key, length=MAX_HEADER_BYTES + 1)
        if len(start) > MAX_HEADER_BYTES:
            stream = io.BytesIO(start[:MAX_HEADER_BYTES])
            ds = dcmread(stream, stop_before_pixels=True, force=True)
            if not _header_complete(stream, ds):
                raise ObjectTooLarge(f"the header of {key} is longer than {MAX_HEADER_BYTES} bytes")
            return ds
    return dcmread(io.BytesIO(start), stop_before_pixels=True, force=True)


def with_tags(objects: ObjectStore, facts: StudyFacts) -> StudyFacts:
    """The facts with each series' tags from the header of its first instance.

    Raises storage.errors.StorageUnavailable when the object store cannot give one (retriable).
    """
    series = []
    for s in facts.series:
        tags: dict[str, str] = {}
        if s.instances:
            try:
                tags = header_tags(read_header(objects, s.instances[0].object_key))
            except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, struct.error) as exc:
                # The listener stored it, so it parsed once; unreadable now, it matches only empty patterns.
                log.warning("header of %s unreadable: %s", s.instances[0].object_key, type(exc).__name__)
        series.append(s.model_copy(update={"tags": tags}))
    return facts.model_copy(update={"series": tuple(series)})
