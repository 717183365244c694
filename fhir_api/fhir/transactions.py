"""Batch and transaction Bundles (http://hl7.org/fhir/R4/http.html#transaction).

A transaction runs every entry in one database transaction: all succeed or nothing is
stored. Entries are processed DELETE, POST, PUT, then GET (http.html#trules), and `urn:uuid`
fullUrls of created resources are replaced by their new "Type/id" in every reference of the
Bundle before anything is stored. A batch runs each entry on its own and reports each outcome.
"""

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from fhir_api.fhir import bundles, disclosures, interactions, search, subscription_rules
from storage.fhir import store
from storage import fhir
from fhir_api.auth.tokens import Principal, allows
from fhir_api.errors import BadRequest, FhirError, Forbidden, NotFound, as_fhir_error
from fhir_api.fhir.actors import Actor
from fhir_api.fhir.interactions import Written
from fhir_api.responses import operation_outcome
from storage.errors import StorageError, StorageUnavailable
from storage.db import session_scope

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3, "HEAD": 3}
_REASONS = {200: "OK", 201: "Created", 204: "No Content"}
_INTERACTION_SCOPE = {"POST": "c", "PUT": "u", "DELETE": "d"}


@dataclass(frozen=True)
class Context:
    """Who sends the Bundle (their token, and as the writer of its changes) and the base URL it is relative to."""

    principal: Principal
    actor: Actor
    base_url: str


@dataclass(frozen=True)
class Target:
    """An entry's request URL, split: type, id, version or search query."""

    resource_type: str
    resource_id: str = ""
    version: str = ""
    query: str = ""


def _target(url: str, base_url: str) -> Target:
    if url.startswith(base_url):
        url = url[len(base_url) :]
    parts = urlsplit(url.lstrip("/"))
    segments = [s for s in parts.path.split("/") if s]
    if not segments or segments[0] not in fhir.RESOURCE_CLASSES:
        raise NotFound(f"unsupported request URL {url!r}")
    if len(segments) == 1:
        return Target(segments[0], query=parts.query)
    if len(segments) == 2:
        return Target(segments[0], segments[1])
    if len(segments) == 4 and segments[2] == "_history":
        return Target(segments[0], segments[1], version=segments[3])
    raise NotFound(f"unsupported request URL {url!r}")


def _rewrite(node: Any, ids: dict[str, str]) -> Any:
    # Replace urn:uuid references with the ids assigned in this transaction (http.html#trules).
    if isinstance(node, dict):
        return {
            k: ids.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, ids) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(item, ids) for item in node]
    return node


def _resolve_ids(session: Session, entries: list[fhir.BundleEntry], ctx: Context) -> dict[str, str]:
    ids: dict[str, str] = {}
    for entry in entries:
        request, full_url = entry.request, entry.fullUrl or ""
        if request is None or not full_url.startswith("urn:"):
            continue
        target = _target(request.url or "", ctx.base_url)
        if request.method == "POST":
            conditions = request.ifNoneExist
            found = interactions.find(session, target.resource_type, conditions, ctx.actor) if conditions else []
            ids[full_url] = f"{target.resource_type}/{found[0] if len(found) == 1 else interactions.new_id()}"
        elif request.method == "PUT" and target.resource_id:
            ids[full_url] = f"{target.resource_type}/{target.resource_id}"
        elif request.method == "PUT" and target.query:
            found = interactions.find(session, target.resource_type, target.query, ctx.actor)
            ids[full_url] = f"{target.resource_type}/{found[0] if len(found) == 1 else interactions.new_id()}"
    return ids


def _response(written: Written) -> fhir.BundleEntry:
    status = f"{written.status} {_REASONS.get(written.status, '')}".strip()
    return fhir.BundleEntry(
        fullUrl=None,
        resource=written.resource,
        response=fhir.BundleEntryResponse(
            status=status,
            location=written.location if written.version and written.status != 204 else None,
            etag=bundles.etag(written.version) if written.version and written.status != 204 else None,
            lastModified=written.last_modified,
        ),
    )


def _require(principal: Principal, resource_type: str, letter: str) -> None:
    if not allows(principal, resource_type, letter):
        raise Forbidden(f"the token's scopes do not allow '{letter}' on {resource_type}")


def _get(session: Session, target: Target, ctx: Context) -> fhir.BundleEntry:
    who, address, admin = ctx.actor.client_id, ctx.actor.address, ctx.actor.admin
    if not target.resource_id:
        _require(ctx.principal, target.resource_type, "s")
        query = search.parse_query(target.resource_type, parse_qsl(target.query), strict=False)
        result = search.run(session, query, may_read=lambda t: allows(ctx.principal, t, "r"))
        # A search entry is audited as a search: the matches and what they include (issue 18).
        disclosures.audit_search(session, result, target.resource_type, who=who, address=address, query=target.query)
        searchset = bundles.searchset(subscription_rules.shown_result(result, who, admin), query, base_url=ctx.base_url)
        resource: fhir.Resource = fhir.parse_bundle(json.loads(searchset))
    else:
        _require(ctx.principal, target.resource_type, "r")
        if target.version:
            number = interactions.version_number(target.version)
            if number is None:
                raise NotFound(f"no version {target.version[:40]!r}")
            resource = store.vread(session, target.resource_type, target.resource_id, number)
        else:
            resource = store.read(session, target.resource_type, target.resource_id)
        disclosures.audit_read(session, resource, who=who, address=address)
        resource = subscription_rules.shown(resource, who, admin)
    return fhir.BundleEntry(resource=resource, response=fhir.BundleEntryResponse(status="200 OK"))


def _entry(session: Session, entry: fhir.BundleEntry, ids: dict[str, str], ctx: Context) -> fhir.BundleEntry:
    request = entry.request
    if request is None:
        raise BadRequest("every entry needs a request (method and url)")
    method = request.method
    target = _target(request.url or "", ctx.base_url)
    if method in ("GET", "HEAD"):
        return _get(session, target, ctx)
    if method not in _INTERACTION_SCOPE:
        raise BadRequest(f"unsupported method {method}")
    _require(ctx.principal, target.resource_type, _INTERACTION_SCOPE[method])
    if method == "DELETE":
        if target.resource_id:
            return _response(interactions.delete(session, target.resource_type, target.resource_id, actor=ctx.actor))
        return _response(interactions.conditional_delete(session, target.resource_type, target.query, actor=ctx.actor))
    if entry.resource is None:
        raise BadRequest(f"a {method} entry needs a resource")
    data = _rewrite(json.loads(fhir.dump(entry.resource)), ids)
    resource = fhir.parse_data(data)
    if resource.get_resource_type() != target.resource_type:
        raise BadRequest(f"the resource is a {resource.get_resource_type()}, the URL names {target.resource_type}")
    full_url = entry.fullUrl or ""
    if method == "POST":
        assigned = ids.get(full_url, "").partition("/")[2]
        return _response(
            interactions.create(session, resource, actor=ctx.actor, if_none_exist=request.ifNoneExist, assigned_id=assigned)
        )
    if target.resource_id:
        return _response(
            interactions.update(
                session, target.resource_type, target.resource_id, resource, actor=ctx.actor, if_match=request.ifMatch
            )
        )
    if full_url in ids and not resource.id:
        resource = resource.model_copy(update={"id": ids[full_url].partition("/")[2]})
    return _response(
        interactions.conditional_update(
            session, target.resource_type, target.query, resource, actor=ctx.actor, if_match=request.ifMatch
        )
    )


def transaction(engine: Engine, bundle: fhir.Bundle, ctx: Context) -> fhir.Bundle:
    """Run a transaction Bundle all-or-nothing; an entry's error fails the whole Bundle."""
    entries = list(bundle.entry or [])
    order = sorted(range(len(entries)), key=lambda i: _ORDER.get(str(getattr(entries[i].request, "method", "")), 9))
    answers: dict[int, fhir.BundleEntry] = {}
    with session_scope(engine) as session:
        ids = _resolve_ids(session, entries, ctx)
        for i in order:
            try:
                answers[i] = _entry(session, entries[i], ids, ctx)
            except StorageUnavailable:
                raise
            except (FhirError, StorageError, ValueError) as exc:
                request = entries[i].request
                where = f"entry {i} ({request.method} {request.url})" if request else f"entry {i}"
                error = as_fhir_error(exc)
                error.args = (f"{where}: {exc}",)
                raise error from (None if error is exc else exc)
    return _answer("transaction-response", [answers[i] for i in range(len(entries))], ctx)


def batch(engine: Engine, bundle: fhir.Bundle, ctx: Context) -> fhir.Bundle:
    """Run a batch Bundle: each entry in its own transaction, failures reported per entry."""
    answers = []
    for entry in bundle.entry or []:
        try:
            with session_scope(engine) as session:
                answers.append(_entry(session, entry, {}, ctx))
        except StorageUnavailable:
            raise
        except (FhirError, StorageError, ValueError) as exc:
            error = as_fhir_error(exc)
            answers.append(
                fhir.BundleEntry(
                    response=fhir.BundleEntryResponse(
                        status=str(error.status_code), outcome=operation_outcome("error", error.issue_code, str(exc))
                    )
                )
            )
    return _answer("batch-response", answers, ctx)


def _answer(kind: str, entries: list[fhir.BundleEntry], ctx: Context) -> fhir.Bundle:
    for entry in entries:
        if entry.resource is not None and entry.resource.id and entry.resource.get_resource_type() != "Bundle":
            entry.fullUrl = f"{ctx.base_url}/{entry.resource.get_resource_type()}/{entry.resource.id}"
            entry.resource = subscription_rules.shown(entry.resource, ctx.actor.client_id, ctx.actor.admin)
    return fhir.Bundle(type=kind, entry=entries or None)
