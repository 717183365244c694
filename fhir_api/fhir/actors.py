"""Who makes a change, from where, and what their token allows: the write interactions' view of a client."""

from collections.abc import Callable
from dataclasses import dataclass

from fhir_api.subscriptions.endpoints import EndpointPolicy


@dataclass(frozen=True)
class Actor:
    """Who makes a change, from where, the correlation id its records share, and what they may do.

    `may(type, letter)` says whether the token allows a SMART interaction (c, r, u, d, s) on a
    type; `admin` whether it carries the admin role; `endpoints` where their Subscriptions may
    send notifications.
    """

    client_id: str
    address: str
    correlation_id: str
    may: Callable[[str, str], bool]
    admin: bool
    endpoints: EndpointPolicy
