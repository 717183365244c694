"""This server's rules for Subscriptions (http://hl7.org/fhir/R4/subscription.html), beyond the R4 model.

Only rest-hook channels with an endpoint and a JSON payload (or none) are served. A client may
subscribe only to what its token lets it read: the criteria's type and every type a chain in
them touches, or notifications would disclose what a read would refuse (issue 18). The
endpoint must be one the engine may call (fhir_api/subscriptions/endpoints.py). The client
that creates a Subscription owns it (an extension records which), only the owner or an admin
may change or delete it, and only they see its channel header values, which often carry the
endpoint's credentials: everyone else reads them masked.
"""

from dataclasses import replace

from storage import fhir
from storage.errors import InvalidSearch
from storage.fhir import criteria
from storage.fhir.store import Stored
from storage.fhir.subscriptions import watch
from fhir_api.errors import Forbidden, Unprocessable
from fhir_api.fhir.actors import Actor
from fhir_api.fhir.search import SearchResult
from fhir_api.subscriptions.endpoints import EndpointRefused

OWNER_EXTENSION = "urn:doctorai:subscription-owner"
MASK = "[masked]"
# The payload types a rest-hook channel may ask for; XML is not served (http.html#mime-type).
_JSON_PAYLOADS = ("application/fhir+json", "application/json")


def owner(subscription: fhir.Resource) -> str:
    """The client id that created the Subscription ("" for one stored before owners were recorded)."""
    for extension in getattr(subscription, "extension", None) or []:
        if extension.url == OWNER_EXTENSION and extension.valueString:
            return str(extension.valueString)
    return ""


def _may_manage(current: fhir.Resource, actor: Actor) -> bool:
    return actor.admin or owner(current) == actor.client_id


def require_owner(current: fhir.Resource, actor: Actor) -> None:
    """Forbidden unless the actor owns this Subscription or is an admin."""
    if not _may_manage(current, actor):
        raise Forbidden("only the client that created this Subscription, or an admin, may change or delete it")


def readable(resource_type: str, found: list[criteria.Criterion], actor: Actor) -> None:
    """Forbidden unless the token may read (r or s) the type and every type a chained criterion touches."""
    for kind in [resource_type, *(c.target for c in found if c.chained is not None)]:
        if not (actor.may(kind, "r") or actor.may(kind, "s")):
            raise Forbidden(f"the token's scopes do not allow reading {kind}, which the criteria search")


def prepare(subscription: fhir.Subscription, actor: Actor, current: fhir.Resource | None) -> fhir.Subscription:
    """The Subscription as stored: checked, owned, and active once its criteria are accepted."""
    if current is not None:
        require_owner(current, actor)
    channel = subscription.channel
    if channel is None or channel.type != "rest-hook" or not channel.endpoint:
        raise Unprocessable("only rest-hook Subscription channels with an endpoint are supported")
    if channel.payload and channel.payload.split(";")[0].strip() not in _JSON_PAYLOADS:
        raise Unprocessable(f"unsupported Subscription payload {channel.payload!r}: use application/fhir+json")
    if not all(":" in (h or "") for h in channel.header or []):
        raise Unprocessable("Subscription.channel.header values must be 'Name: value'")
    try:
        wanted = watch(subscription)
    except InvalidSearch as exc:
        raise Unprocessable(f"Subscription.criteria: {exc}") from exc
    readable(wanted.resource_type, wanted.criteria, actor)
    try:
        actor.endpoints.check(str(channel.endpoint))
    except EndpointRefused as exc:
        raise Unprocessable(f"Subscription.channel.endpoint: {exc}") from exc
    keeper = owner(current) if current is not None else actor.client_id
    extensions = [e for e in subscription.extension or [] if e.url != OWNER_EXTENSION]
    update: dict[str, object] = {"extension": [*extensions, fhir.Extension(url=OWNER_EXTENSION, valueString=keeper)]}
    if subscription.status in ("requested", "error"):
        # The server activates a requested subscription once it accepts the criteria.
        update.update(status="active", error=None)
    return subscription.model_copy(update=update)


def shown(resource: fhir.Resource, who: str, admin: bool) -> fhir.Resource:
    """The resource as this client may see it: a Subscription's header values masked unless they own it."""
    if not isinstance(resource, fhir.Subscription) or admin or owner(resource) == who:
        return resource
    channel = resource.channel
    if channel is None or not channel.header:
        return resource
    masked = [f"{(h or '').split(':', 1)[0]}: {MASK}" for h in channel.header]
    return resource.model_copy(update={"channel": channel.model_copy(update={"header": masked})})


def shown_stored(found: Stored, who: str, admin: bool) -> Stored:
    """A stored resource's JSON as this client may see it (only Subscriptions are parsed)."""
    if found.resource_type != "Subscription":
        return found
    resource = found.resource()
    visible = shown(resource, who, admin)
    return found if visible is resource else Stored(found.resource_type, found.id, fhir.dump(visible))


def shown_result(result: SearchResult, who: str, admin: bool) -> SearchResult:
    """A search page as this client may see it."""
    return replace(
        result,
        matches=[shown_stored(f, who, admin) for f in result.matches],
        included=[shown_stored(f, who, admin) for f in result.included],
    )
