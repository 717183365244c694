"""The role table of the admin API (issue 7, issue 16): which roles may read, and which may change,
each area of /admin. The admin API enforces it (fhir_api/admin/access.py); the console shows each
person only what it allows them (fhir_api/console/routes.py answers it at sign-in).
"""

from collections.abc import Mapping

from fhir_api.auth.tokens import ADMIN, AUDITOR, OPERATOR

# The areas of the admin API: the first segment of each route's path.
AREAS = (
    "overview",
    "processes",
    "peers",
    "destinations",
    "rules",
    "models",
    "studies",
    "jobs",
    "forwards",
    "deliveries",
    "dead-letters",
    "hl7",
    "stats",
    "clients",
    "users",
    "tokens",
    "audit",
    "openapi.json",
)
_OPERATIONS = frozenset({ADMIN, OPERATOR})
# The role table: who may read, and who may change, each area. The audit trail is the auditor's
# alone (a compliance officer's tool, as on /fhir/AuditEvent), and it is never changed; people's
# accounts and revoking tokens are the admin's alone. Everything else: admin and operator read, admin changes.
READERS: Mapping[str, frozenset[str]] = {
    **{area: _OPERATIONS for area in AREAS},
    "users": frozenset({ADMIN}),
    "tokens": frozenset({ADMIN}),
    "audit": frozenset({AUDITOR}),
}
CHANGERS: Mapping[str, frozenset[str]] = {
    **{area: frozenset({ADMIN}) for area in AREAS},
    "audit": frozenset(),
}


def area_of(path: str) -> str:
    """The area of a path relative to /admin ("/studies/1.2/release" -> "studies")."""
    return path.strip("/").split("/", 1)[0]


def may(roles: set[str] | frozenset[str], *, area: str, change: bool) -> bool:
    """Whether one of these roles may read (or change) this area."""
    table = CHANGERS if change else READERS
    return bool(set(roles) & table.get(area, frozenset()))
