"""docs/dicom-conformance.md says what the code registers: its SOP class, transfer syntax, status and
Query/Retrieve key tables (those marked `<!-- checked: name -->`) against negotiation.py,
dimse_status.py and storage/dicom_query.py."""

import re
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pynetdicom import ALL_TRANSFER_SYNTAXES

from dicom_listener import negotiation
from integration import dimse_status
from storage.dicom_query import KEYS, UNIQUE

DOC = Path(__file__).resolve().parent.parent / "docs" / "dicom-conformance.md"
_UID = re.compile(r"^\d+(\.\d+)+$")


def table(name: str) -> list[list[str]]:
    """The rows (cells stripped) of the table after `<!-- checked: name -->`, header and rule left out."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"<!-- checked: {name} -->") + 3
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert rows, name
    return rows


def _uids(rows: list[list[str]], column: int) -> set[str]:
    return {row[column] for row in rows if _UID.match(row[column])}


def test_sop_classes_and_transfer_syntaxes() -> None:
    supported = negotiation.supported()
    storage = negotiation.storage_sop_classes()
    others = set(supported) - storage
    assert _uids(table("network-services"), 1) == others
    assert _uids(table("sop-classes"), 1) == others
    assert {row[2] for row in table("sop-classes") if _UID.match(row[1])} == {"default"}
    defaults = _uids(table("default-transfer-syntaxes"), 1)
    assert all(supported[uid] == defaults for uid in others)
    assert _uids(table("storage-sop-classes"), 1) == storage
    syntaxes = [row[1] for row in table("storage-transfer-syntaxes")]
    assert syntaxes == list(ALL_TRANSFER_SYNTAXES)
    assert all(supported[uid] == set(syntaxes) for uid in storage)


def test_statuses_are_the_tables() -> None:
    documented = set()
    for service, code, meaning, behaviour in table("statuses"):
        row = dimse_status.status_of(int(code, 16), service)
        assert row is not None and row.meaning == meaning, (service, code)
        assert behaviour, (service, code)
        documented.add(int(code, 16))
    answered = {value for name, value in vars(dimse_status).items() if name.isupper() and isinstance(value, int)}
    assert answered <= documented, [f"{code:04X}" for code in sorted(answered - documented)]


def test_query_retrieve_keys() -> None:
    rows = table("query-keys")
    assert [(level, keyword) for level, keyword, *_ in rows] == [(k.level, k.keyword) for k in KEYS.values()]
    for level, keyword, tag, kind, _ in rows:
        number = tag_for_keyword(keyword)
        assert number is not None and tag == f"({number >> 16:04X},{number & 0xFFFF:04X})", keyword
        key = KEYS[keyword]
        expected = "U" if UNIQUE[key.level] == keyword else "R" if key.required else "O"
        assert kind == expected, keyword
