"""Bad input for every door, for benchmarks/faults.py: the nasty cases issue 18 found among the seeds,
then seeded mutations of good input (random.Random: the same seed gives the same cases).

Each case is (label, payload, must_refuse): `must_refuse` when no correct server may accept it.
"""

import json
import random
import struct
import zlib
from collections.abc import Iterator

Case = tuple[str, bytes, bool]

# Every byte an MLLP block is framed with (HL7 v2.5.1 Appendix C.4.3).
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
# UIDs that are no UIDs (PS3.5 9.1: digits and dots, at most 64 characters, no leading zero).
BAD_UIDS = ["1.2/3", "..", "1.2.3/../../4", "1." + "2" * 70, "1.2\\3", "abc", "1..2", ".1.2", "1.2.", "1.02"]


def _item(kind: int, value: bytes) -> bytes:
    """A PS3.8 9.3.2 variable item: type, reserved, 2-byte length, value."""
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(*, contexts: int = 1, called: bytes = b"DOCTORAI", abstract: bytes = b"1.2.840.10008.1.1") -> bytes:
    """A well-formed A-ASSOCIATE-RQ (PS3.8 9.3.2) for Verification with `contexts` presentation contexts."""
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for n in range(contexts):
        items += _item(0x20, bytes([2 * n + 1, 0, 0, 0]) + _item(0x30, abstract) + _item(0x40, b"1.2.840.10008.1.2"))
    items += _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.18"))
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + b"FUZZSCU".ljust(16) + bytes(32) + items
    return struct.pack(">BBI", 1, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def dicom_seeds() -> list[Case]:
    """The hand-made bad PDUs: issue 18's among them."""
    good = associate_rq()
    bad_sub_item = bytearray(good)
    # The abstract syntax sub-item (0x30) claims more bytes than its presentation context holds.
    at = bytes(bad_sub_item).index(b"\x30\x00")
    bad_sub_item[at + 2 : at + 4] = struct.pack(">H", 0xFFF0)
    return [
        ("rq-without-presentation-contexts", associate_rq(contexts=0), True),
        ("rq-bad-sub-item-length", bytes(bad_sub_item), True),
        ("rq-pdu-length-beyond-the-bytes", good[:2] + struct.pack(">I", 0x7FFFFFFF) + good[6:], True),
        ("rq-pdu-length-zero", good[:2] + struct.pack(">I", 0) + good[6:], True),
        ("rq-truncated-header", good[:3], True),
        ("rq-protocol-version-zero", good[:6] + b"\x00\x00" + good[8:], True),
        ("rq-128-contexts", associate_rq(contexts=128), False),
        ("unknown-pdu-type", _pdu(0x55, b"\x00" * 16), True),
        ("p-data-before-association", _pdu(0x04, struct.pack(">IB", 2, 1) + b"\x03"), True),
        ("release-before-association", _pdu(0x05, bytes(4)), True),
        ("garbage", bytes(range(256)) * 4, True),
    ]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip, overwrite, insert, delete, truncate, repeat a slice, rewrite a length."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out += rng.randbytes(rng.randint(1, 64))
        op = rng.randrange(7)
        at = rng.randrange(len(out))
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.randrange(256)
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 256))
        elif op == 3:
            del out[at : at + rng.randint(1, 64)]
        elif op == 4:
            del out[at:]
        elif op == 5:
            piece = out[at : at + rng.randint(1, 128)]
            out[at:at] = piece * rng.randint(1, 8)
        else:
            out[at : at + 2] = struct.pack(">H", rng.choice([0, 1, 0x7FFF, 0xFFFF, rng.randrange(65536)]))
    return bytes(out)


def dicom_pdus(n: int, rng: random.Random) -> Iterator[Case]:
    """The seeds, then mutations of a good A-ASSOCIATE-RQ and of the seeds."""
    seeds = dicom_seeds()
    yield from seeds[:n]
    good = [associate_rq(), associate_rq(contexts=3)] + [s[1] for s in seeds]
    for i in range(max(0, n - len(seeds))):
        yield (f"mutated-{i}", mutate(rng.choice(good), rng), False)


def deflate_bomb(inflated: int) -> bytes:
    """A Deflated Explicit VR Little Endian data set (PS3.5 A.5) whose one private element inflates to `inflated` bytes."""
    element = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, inflated)
    creator = struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 6) + b"FUZZ  "
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(creator + element)
    chunk = bytes(1 << 20)
    for _ in range(inflated >> 20):
        out += compressor.compress(chunk)
    return out + compressor.flush()


def hl7_frames(n: int, rng: random.Random, good: bytes) -> Iterator[Case]:
    """MLLP frames: the seeds (no end block, no start block, empty, nested), then mutated messages, framed
    or not. A case `must_refuse` when its frame is whole and its message cannot be accepted."""
    seeds: list[Case] = [
        ("frame-without-end-block", VT + good, True),
        ("frame-without-start-block", good + FS + CR, True),
        ("empty-frame", VT + FS + CR, True),
        ("start-block-twice", VT + VT + good + FS + CR, False),
        ("end-block-inside", VT + good[:40] + FS + good[40:] + FS + CR, False),
        ("no-msh", VT + good.split(CR, 1)[1] + FS + CR, True),
        ("bad-encoding-characters", VT + good.replace(b"^~\\&", b"\x00\x00\x00\x00", 1) + FS + CR, True),
        ("huge-field", VT + good.replace(b"Roentgen", b"R" * 2_000_000, 1) + FS + CR, False),
        ("binary", VT + bytes(range(1, 11)) * 100 + FS + CR, True),
        ("msh-only", VT + b"MSH|^~\\&|" + FS + CR, True),
    ]
    yield from seeds[:n]
    for i in range(max(0, n - len(seeds))):
        message = good
        if rng.random() < 0.5:  # structural: drop, repeat or garble segments and fields
            segments = message.split(CR)
            j = rng.randrange(len(segments))
            fields = segments[j].split(b"|")
            k = rng.randrange(len(fields))
            fields[k] = rng.choice([b"", b"\\" * 50, b"^" * 300, rng.randbytes(rng.randint(1, 40)), b"9" * 40, b"&~^"])
            segments[j] = b"|".join(fields)
            message = CR.join(segments)
        else:
            message = mutate(message, rng)
        framed = VT + message.replace(FS, b"") + FS + CR
        yield (f"mutated-{i}", framed, False)


def _nested(depth: int) -> bytes:
    return b'{"resourceType":"Patient","extension":' + b"[" * depth + b"]" * depth + b"}"


def fhir_seeds() -> list[tuple[str, str, str, bytes]]:
    """(label, method, path, body) the issue found answering 500, and their kin."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": None}, "request": {"method": "POST", "url": "Patient"}}]}

    def entry(resource: object) -> bytes:
        b = json.loads(json.dumps(bundle))
        b["entry"][0]["resource"] = resource
        return json.dumps(b).encode()

    return [
        ("nested-990", "POST", "/fhir/Patient", _nested(990)),
        ("nested-100000", "POST", "/fhir/Patient", _nested(100_000)),
        ("unknown-resource-type", "POST", "/fhir/Patient", b'{"resourceType":"Spaceship"}'),
        ("bundle-entry-unknown-type", "POST", "/fhir", entry({"resourceType": "Spaceship"})),
        ("bundle-entry-type-not-a-string", "POST", "/fhir", entry({"resourceType": 7})),
        ("bundle-entry-type-a-list", "POST", "/fhir", entry({"resourceType": ["Patient"]})),
        ("birth-date-9999-12-31", "POST", "/fhir/Patient", b'{"resourceType":"Patient","birthDate":"9999-12-31"}'),
        ("date-0001-01-01-plus-14", "POST", "/fhir/Observation",
         b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"effectiveDateTime":"0001-01-01T00:00:00+14:00"}'),
        ("required-element-null", "POST", "/fhir/Observation", b'{"resourceType":"Observation","status":null,"code":null}'),
        ("integer-2-70", "POST", "/fhir/Observation",
         b'{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":1180591620717411303424}'),
        ("gender-banana", "POST", "/fhir/Patient", b'{"resourceType":"Patient","gender":"banana"}'),
        ("not-json", "POST", "/fhir/Patient", b"{'resourceType':"),
        ("count-minus-2", "GET", "/fhir/Patient/_history?_count=-2", b""),
        ("count-zero", "GET", "/fhir/Patient/_history?_count=0", b""),
        ("search-birthdate-9999", "GET", "/fhir/Patient?birthdate=ge9999-12-31", b""),
        ("search-date-year-0", "GET", "/fhir/Patient?birthdate=0000-01-01", b""),
        ("search-bad-prefix", "GET", "/fhir/Patient?birthdate=zz2020", b""),
        ("search-2-70-count", "GET", f"/fhir/Patient?_count={2**70}", b""),
        ("revinclude-star", "GET", "/fhir/Patient?_revinclude=*&_include=*", b""),
        ("chain-to-nothing", "GET", "/fhir/Observation?subject:Spaceship.name=x", b""),
    ]


PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:fuzz", "value": "1"}], "name": [{"family": "Fuzz", "given": ["A"]}],
           "gender": "female", "birthDate": "1970-01-01", "active": True}
NASTY_VALUES: list[object] = [None, "", "9999-12-31", "0001-01-01T00:00:00+14:00", 2**70, -(2**70), 1e308, [], {}, [[[]]], "\x00",
                              "a" * 10_000, True, "../../etc/passwd", {"resourceType": "Spaceship"}]


def _mutate_json(value: object, rng: random.Random) -> object:
    """Replace a random node of a JSON value with a nasty one, or wrap it, or drop a key."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        out = dict(value)
        if rng.random() < 0.15:
            del out[key]
        else:
            out[key] = _mutate_json(value[key], rng)
        if rng.random() < 0.1:
            out[rng.choice(["extra", "_" + key, key.upper(), "resourceType"])] = rng.choice(NASTY_VALUES)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mutate_json(out_list[i], rng)
        return out_list
    return rng.choice(NASTY_VALUES)


SEARCH_PARAMS = ["name", "family", "birthdate", "gender", "identifier", "_id", "_count", "_offset", "_sort", "_include",
                 "_revinclude", "_lastUpdated", "patient", "subject:Patient.name", "code", "date", "_elements", "_summary"]
SEARCH_VALUES = ["", "-1", "0", str(2**70), "ge9999-12-31", "lt0001-01-01", "eq2020-13-45", "x" * 3000, "%00", "a,b,c," * 200,
                 "Patient:*", "*", "le", "ap1970", "urn:x|", "|", "\\", "'; DROP TABLE x;--", "1e999"]


def fhir_requests(n: int, rng: random.Random) -> Iterator[tuple[str, str, str, bytes]]:
    """The seeds, then mutated creates, updates, transactions and searches."""
    seeds = fhir_seeds()
    yield from seeds[:n]
    for i in range(max(0, n - len(seeds))):
        kind = rng.randrange(4)
        if kind == 0:
            yield (f"create-{i}", "POST", "/fhir/Patient", json.dumps(_mutate_json(PATIENT, rng), default=str).encode())
        elif kind == 1:
            body = _mutate_json({**PATIENT, "id": "fuzz"}, rng)
            yield (f"update-{i}", "PUT", "/fhir/Patient/fuzz", json.dumps(body, default=str).encode())
        elif kind == 2:
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [{"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}]}
            yield (f"transaction-{i}", "POST", "/fhir", json.dumps(_mutate_json(bundle, rng), default=str).encode())
        else:
            params = "&".join(f"{rng.choice(SEARCH_PARAMS)}={rng.choice(SEARCH_VALUES)}" for _ in range(rng.randint(1, 4)))
            yield (f"search-{i}", "GET", f"/fhir/{rng.choice(['Patient', 'Observation', 'DiagnosticReport', 'Spaceship'])}?{params}", b"")


ADMIN_BODIES: dict[str, tuple[str, dict[str, object]]] = {
    "/admin/rules/validate": ("POST", {"name": "r", "match": {"modalities": ["CT"]}, "run": [{"model": "modality-check"}]}),
    "/admin/rules/dry-run": ("POST", {"name": "r", "match": {"modalities": ["CT"]}, "run": [{"model": "modality-check"}]}),
    "/admin/peers/FUZZPEER": ("PUT", {"host": "127.0.0.1", "port": 104, "max_associations": 4}),
    "/admin/destinations": ("POST", {"name": "d", "kind": "webhook", "url": "https://example.org/hook"}),
    "/admin/users": ("POST", {"name": "u", "role": "viewer", "password": "correct horse battery staple"}),
    "/admin/clients": ("POST", {"name": "c", "scopes": ["system/Patient.r"]}),
}
ADMIN_QUERIES = ["/admin/rules", "/admin/studies", "/admin/processes", "/admin/dead-letters", "/admin/destinations", "/admin/peers"]


def admin_requests(n: int, rng: random.Random) -> Iterator[tuple[str, str, str, bytes]]:
    """Mutated admin bodies, and list reads with out-of-range paging."""
    yield ("offset-2-70", "GET", f"/admin/rules?offset={2**70}", b"")
    yield ("limit-minus-1", "GET", "/admin/studies?limit=-1", b"")
    yield ("max-associations-2-70", "PUT", "/admin/peers/FUZZPEER", json.dumps({"host": "127.0.0.1", "max_associations": 2**70}).encode())
    yield ("nested", "POST", "/admin/rules/validate", b"[" * 5000 + b"]" * 5000)
    for i in range(max(0, n - 4)):
        if rng.random() < 0.3:
            q = rng.choice(["offset", "limit", "sort", "status", "kind", "q"])
            yield (f"list-{i}", "GET", f"{rng.choice(ADMIN_QUERIES)}?{q}={rng.choice(SEARCH_VALUES)}", b"")
            continue
        path, (method, body) = rng.choice(list(ADMIN_BODIES.items()))
        yield (f"body-{i}", method, path, json.dumps(_mutate_json(body, rng), default=str).encode())
