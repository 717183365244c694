"""How DICOM values are kept in the study index so that C-FIND and QIDO-RS match them by meaning (PS3.4 C.2.2.2).

Person names are kept as decoded and, beside them, folded: matching a PN is case- and
accent-insensitive, which PS3.4 C.2.2.2.1.1 allows, the same on SQLite and PostgreSQL because
the folding is done here. Times are kept as HHMMSS[.FFFFFF], so that comparing the strings
compares the times ("1030" is 10:30:00, PS3.4 C.2.2.2.1.3 note 1).
"""

import re
import unicodedata

_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")


def fold_name(name: str) -> str:
    """A person name (or a pattern for one) as matched: compatibility-decomposed, accents dropped, case folded.

    Only the combining diacritical marks of U+0300-U+036F are dropped (the accents of Latin, Greek
    and Cyrillic letters); marks that change a letter elsewhere, such as the kana voicing marks,
    stay.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not "\u0300" <= c <= "\u036f").casefold()


def parse_time(value: str) -> tuple[str, str] | None:
    """The first and last moments a TM value covers, in the index's form; None when it is not a time.

    "1030" covers 103000 to 103059.999999: a value stands for its whole precision. The first is
    given without trailing zeros, so that it sorts before every stored time it covers. Colons (the
    ACR-NEMA form, PS3.5 6.2 TM note) are ignored.
    """
    match = _TIME.match(value.strip().replace(":", ""))
    if match is None:
        return None
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        return None
    whole = f"{hours}{minutes or '00'}{seconds or '00'}"
    digits = (fraction or "").rstrip("0")
    first = f"{whole}.{digits}" if digits else whole
    last = f"{hours}{minutes or '59'}{seconds or '59'}.{(fraction or '').ljust(6, '9')}"
    return first, last


def index_time(value: str) -> str:
    """A TM value as the index keeps it: HHMMSS, or HHMMSS.FFFFFF with a fraction; as received when it is not a time."""
    match = _TIME.match(value.strip().replace(":", ""))
    if match is None or parse_time(value) is None:
        return value.strip()[:16]
    hours, minutes, seconds, fraction = match.groups()
    whole = f"{hours}{minutes or '00'}{seconds or '00'}"
    return f"{whole}.{fraction.ljust(6, '0')}" if fraction else whole
