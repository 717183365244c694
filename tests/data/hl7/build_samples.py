"""Regenerate the HL7 v2 samples of this folder, and the README's examples in examples/hl7:
`python tests/data/hl7/build_samples.py`.

Each message is written as ER7 text and must be read by hl7apy (tolerant, finding groups, so
segment order is checked against the version's structure) before it is written; the malformed
ones are written as they are.
`python_hl7_oru_r01.hl7` is python-hl7's `sample_hl7` (tests/samples.py of the hl7 0.4.5 sdist,
BSD licence, see PYTHON_HL7_LICENSE), an ORU^R01 v2.4 from the HL7 normative edition.
"""

from pathlib import Path
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

HERE = Path(__file__).parent
EXAMPLES_DIR = HERE.parents[2] / "examples" / "hl7"


def seg(name: str, values: dict[int, str]) -> str:
    """A segment with `values` at their field positions (1-based), so positions are never miscounted."""
    fields = [""] * max(values)
    for position, value in values.items():
        fields[position - 1] = value
    return "|".join([name, *fields])


SAMPLES = {
    "adt_a01_v251.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240301081500+0100||ADT^A01^ADT_A01|ADT0001|P|2.5.1|||AL|NE",
        "EVN|A01|20240301081500+0100",
        "PID|1||9RG1^^^HOSP&1.2.840.99999.1&ISO^MR~555-44-4444^^^SSA^SS||Roentgen^Wilhelm^Conrad^^Prof.^^L||19450327|M|||Lennep Str. 1^^Remscheid^^42853^DE||^PRN^PH^^^^^^^^^+492191555555|^WPN^PH^^^^^^^^^+492191555556||||||123-45-6789",
        "NK1|1|Roentgen^Bertha|SPO",
        seg("PV1", {1: "1", 2: "I", 3: "RAD^101^1^HOSP", 7: "1234^Curie^Marie", 19: "V5001^^^HOSP^VN", 44: "20240301081000+0100"}),
        "ZPI|custom^value|42",
    ],
    "adt_a04_v23.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240301090000||ADT^A04|ADT0002|P|2.3",
        "EVN|A04|20240301090000",
        "PID|1||PAT0002^^^HOSP^MR||Doe^Jane||19800115|F",
        "PV1|1|O|OPD^^^HOSP",
    ],
    "adt_a08_v24.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240302100000||ADT^A08|ADT0003|P|2.4",
        "EVN|A08|20240302100000",
        "PID|1||PAT0002^^^HOSP^MR||Doe-Smith^Jane^Marie||19800115|F|||12 High St^^Leeds^^LS1 1AA^GB",
        "PV1|1|O|OPD^^^HOSP",
        "ZXX|site specific",
    ],
    "adt_a31_v25.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240302110000||ADT^A31^ADT_A05|ADT0004|P|2.5",
        "EVN|A31|20240302110000",
        "PID|1||PAT0004^^^HOSP^MR||Musterfrau^Erika||19640812|F",
        "PV1|1|N",
    ],
    "adt_a40_v25.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240303120000||ADT^A40^ADT_A39|ADT0005|P|2.5",
        "EVN|A40|20240303120000",
        "PID|1||PAT0002^^^HOSP^MR||Doe-Smith^Jane^Marie||19800115|F",
        "MRG|PAT0099^^^HOSP^MR",
    ],
    "orm_o01_nw_v23.hl7": [
        "MSH|^~\\&|RIS|HOSP|DOCTORAI|AI|20240304080000||ORM^O01|ORM0001|P|2.3",
        "PID|1||9RG1^^^HOSP^MR||Roentgen^Wilhelm||19450327|M",
        "PV1|1|O|RAD^^^HOSP",
        "ORC|NW|PL1001^RIS|FL2001^PACS||SC||||20240304075900|||1234^Curie^Marie",
        seg("OBR", {1: "1", 2: "PL1001^RIS", 3: "FL2001^PACS", 4: "CXR2V^Chest X-ray 2 views^L", 7: "20240304080000", 16: "1234^Curie^Marie", 18: "ACC1001", 27: "^^^^^R", 31: "^Suspected pneumonia"}),
        "ZDS|1.2.3.4.5.6^DOCTORAI^Application^DICOM",
    ],
    "orm_o01_sc_v24.hl7": [
        "MSH|^~\\&|RIS|HOSP|DOCTORAI|AI|20240304083000||ORM^O01|ORM0002|P|2.4",
        "PID|1||9RG1^^^HOSP^MR||Roentgen^Wilhelm||19450327|M",
        "ORC|SC|PL1001^RIS|FL2001^PACS||IP",
        seg("OBR", {1: "1", 2: "PL1001^RIS", 3: "FL2001^PACS", 4: "CXR2V^Chest X-ray 2 views^L", 18: "ACC1001"}),
    ],
    "orm_o01_ca_v23.hl7": [
        "MSH|^~\\&|RIS|HOSP|DOCTORAI|AI|20240304090000||ORM^O01|ORM0003|P|2.3",
        "PID|1||9RG1^^^HOSP^MR||Roentgen^Wilhelm||19450327|M",
        "ORC|CA|PL1001^RIS|FL2001^PACS||CA",
        seg("OBR", {1: "1", 2: "PL1001^RIS", 3: "FL2001^PACS", 4: "CXR2V^Chest X-ray 2 views^L", 18: "ACC1001"}),
    ],
    "omi_o23_v251.hl7": [
        "MSH|^~\\&|RIS|HOSP|DOCTORAI|AI|20240305080000+0000||OMI^O23^OMI_O23|OMI0001|P|2.5.1",
        "PID|1||PAT0005^^^HOSP^MR||Lovelace^Ada||18151210|F",
        "PV1|1|E|ED^^^HOSP",
        "ORC|NW|PL3001^RIS|FL3001^PACS||SC|||||||5678^House^Gregory",
        "TQ1|1||||||20240305081500+0000||S",
        seg("OBR", {1: "1", 2: "PL3001^RIS", 3: "FL3001^PACS", 4: "36643-5^XR Chest 2 Views^LN", 16: "5678^House^Gregory", 31: "R05^Cough^I10"}),
        "IPC|ACC3001|RP3001|1.2.826.0.1.3680043.8.498.1|SPS3001|CR",
    ],
    "oru_r01_v251.hl7": [
        "MSH|^~\\&|OTHERAI|VENDOR|DOCTORAI|AI|20240306093000+0000||ORU^R01^ORU_R01|ORU0001|P|2.5.1",
        "PID|1||PAT0005^^^HOSP^MR||Lovelace^Ada||18151210|F",
        "ORC|RE|PL3001^RIS|FL3001^PACS",
        seg("OBR", {1: "1", 2: "PL3001^RIS", 3: "FL3001^PACS", 4: "36643-5^XR Chest 2 Views^LN", 7: "20240306090000+0000", 22: "20240306092900+0000", 24: "RAD", 25: "F"}),
        "OBX|1|CWE|39607008^Lung structure^SCT|1|263654008^Abnormal^SCT||||||F",
        seg("OBX", {1: "2", 2: "NM", 3: "59776-5^Findings probability^LN", 4: "1", 5: "0.91", 6: "1^^UCUM", 7: "0-0.5", 8: "H", 11: "F", 14: "20240306092800+0000"}),
        "NTE|1||Model output, verified by nobody",
        "OBX|3|TX|18782-3^Study observation^LN||Patchy opacity in the right lower lobe.~No effusion.||||||F",
    ],
    "bad_no_msh.hl7": ["PID|1||PAT0006^^^HOSP^MR||Nobody^Nemo"],
    "bad_encoding.hl7": [
        "MSH|^~|EHR|HOSP|DOCTORAI|AI|20240301090000||ADT^A04|BAD0002|P|2.5",
        "PID|1||PAT0007^^^HOSP^MR",
    ],
    "bad_unknown_type.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240301090000||SIU^S12^SIU_S12|BAD0003|P|2.5",
        "SCH|1|1",
    ],
    "bad_no_patient_id.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20240301090000||ADT^A04^ADT_A01|BAD0004|P|2.5",
        "EVN|A04|20240301090000",
        "PID|1||||Anonymous^Anna",
    ],
}
# The README's walkthrough (examples/hl7): the RIS announces the patient of pydicom-data's RG1_UNCR.dcm
# and orders the chest radiograph, accession "exam Number" as in that file, so the study sent after
# them is linked to the order and its report is `basedOn` it. Written with LF line ends, to be read.
EXAMPLES = {
    "adt_a04.hl7": [
        "MSH|^~\\&|EHR|HOSP|DOCTORAI|AI|20040826180000||ADT^A04^ADT_A01|EXADT0001|P|2.5.1",
        "EVN|A04|20040826180000",
        "PID|1||9RG1^^^HOSP^MR||CompressedSamples^RG1||19400305|F",
        "PV1|1|O|RAD^^^HOSP",
    ],
    "orm_o01.hl7": [
        "MSH|^~\\&|RIS|HOSP|DOCTORAI|AI|20040826181000||ORM^O01|EXORM0001|P|2.3",
        "PID|1||9RG1^^^HOSP^MR||CompressedSamples^RG1||19400305|F",
        "PV1|1|O|RAD^^^HOSP",
        "ORC|NW|PL9001^RIS|FL9001^PACS||SC||||20040826181000",
        seg("OBR", {1: "1", 2: "PL9001^RIS", 3: "FL9001^PACS", 4: "CXR1V^Chest X-ray 1 view^L", 7: "20040826181000", 18: "exam Number", 31: "^Suspected pneumonia"}),
    ],
}
# Written with CR LF segment ends, as some interface engines send them.
CRLF = {"adt_a04_v23.hl7"}
MALFORMED = {"bad_no_msh.hl7", "bad_encoding.hl7", "bad_unknown_type.hl7"}


def _segment_names(element: Any) -> list[str]:
    names: list[str] = []
    for child in element.children:
        if child.classname == "Segment":
            names.append(child.name)
        elif child.classname == "Group":
            names += _segment_names(child)
    return names


def _check(name: str, segments: list[str]) -> None:
    """Fail unless hl7apy reads the message with every segment in its place."""
    message = parse_message("\r".join(segments) + "\r", validation_level=VALIDATION_LEVEL.TOLERANT)
    # hl7apy's group finding leaves trailing Z-segments out of its tree; the rest must all be there.
    wanted = [s.split("|")[0] for s in segments if not s.startswith("Z")]
    found = [n for n in _segment_names(message) if not n.startswith("Z")]
    assert found == wanted, (name, found)


def main() -> None:
    """Write every sample and example; fail if hl7apy cannot read a well-formed one."""
    for name, segments in SAMPLES.items():
        if name not in MALFORMED:
            _check(name, segments)
        end = "\r\n" if name in CRLF else "\r"
        (HERE / name).write_bytes((end.join(segments) + end).encode())
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, segments in EXAMPLES.items():
        _check(name, segments)
        (EXAMPLES_DIR / name).write_bytes(("\n".join(segments) + "\n").encode())


if __name__ == "__main__":
    main()
