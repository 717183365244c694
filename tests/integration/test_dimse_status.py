"""The DIMSE status table: every code's category, the named codes and the ranges of PS3.4 B.2.3."""

from pynetdicom.status import code_to_category

from integration import dimse_status
from integration.dimse_status import Category, category, status_of


def test_every_code_has_the_category_pynetdicom_gives_it() -> None:
    # pynetdicom classifies by PS3.7 Annex C, as the SCUs we talk to do.
    wrong = [f"0x{code:04X}" for code in range(0x10000) if category(code).value != code_to_category(code)]
    assert not wrong


def test_named_codes_and_ranges() -> None:
    assert category(dimse_status.SUCCESS) == Category.SUCCESS
    for code in (
        dimse_status.OUT_OF_RESOURCES,
        dimse_status.DATA_SET_DOES_NOT_MATCH,
        dimse_status.CANNOT_UNDERSTAND,
        dimse_status.DUPLICATE_SOP_INSTANCE,
        dimse_status.PROCESSING_FAILURE,
        dimse_status.UNRECOGNIZED_OPERATION,
        dimse_status.NO_LONGER_UPDATABLE,
    ):
        assert category(code) == Category.FAILURE
        row = status_of(code)
        assert row is not None and row.first == code  # each named code has its row (or starts its range)
    out_of_resources = status_of(0xA7FE)
    assert out_of_resources is not None and out_of_resources.meaning == "Refused: Out of Resources"
    mpps = status_of(dimse_status.NO_LONGER_UPDATABLE)  # listed before the A7xx range it falls in
    assert mpps is not None and mpps.meaning.startswith("Performed Procedure Step")
    coerced = status_of(0xB000)
    assert coerced is not None and (coerced.category, coerced.meaning) == (Category.WARNING, "Coercion of Data Elements")
    assert category(0xB123) == Category.WARNING  # any other B000-BFFF code
    assert status_of(0x1234) is None and category(0x1234) == Category.UNKNOWN
