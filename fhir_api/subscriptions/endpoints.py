"""Where Subscription notifications may go: never into the engine's own networks (issue 18).

A rest-hook endpoint is a URL a client chose. Unchecked, the engine would call whatever it can
reach: the object store on 127.0.0.1, a cloud's metadata service on 169.254.169.254, the
hospital's private network. So an endpoint must be http or https, and every address its host
resolves to must be a public one, unless the admin's allow-list
(DOCTORAI_SUBSCRIPTION_ALLOWED_ENDPOINTS: host names, or networks in CIDR form) names the host or
holds the address. The check runs when a Subscription is stored and again on every delivery,
on the very address the deliverer then connects to, so a name that resolves elsewhere by then
is refused too; redirects are never followed.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointRefused(ValueError):
    """The endpoint's scheme, host or addresses are not allowed."""


@dataclass(frozen=True)
class EndpointPolicy:
    """The host names and networks the admin allows beside public addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> "EndpointPolicy":
        """From the setting's entries: CIDR networks (or single addresses) and host names."""
        hosts, networks = set(), []
        for entry in (e.strip() for e in entries if e.strip()):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allowed(self, host: str, address: str) -> bool:
        """Whether a connection to `address` (which `host` resolved to) may be made."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if host.lower().rstrip(".") in self.hosts or any(ip in network for network in self.networks):
            return True
        # is_global is False for loopback, private (RFC 1918, fc00::/7), link-local, shared
        # (100.64/10), reserved and unspecified addresses (Python ipaddress, IANA registries).
        return ip.is_global and not ip.is_multicast

    def target(self, url: str) -> tuple[str, int]:
        """The host and port of an http(s) URL; EndpointRefused for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointRefused(f"a rest-hook endpoint must be an http or https URL, not {url[:100]!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise EndpointRefused(f"the endpoint's port is not a port: {url[:100]!r}") from None
        return parts.hostname, port

    def check_addresses(self, host: str, found: Iterable[Any]) -> list[str]:
        """The addresses of getaddrinfo's answer; EndpointRefused unless there are some and all are allowed."""
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        refused = [a for a in addresses if not self.allowed(host, a)]
        if not addresses or refused:
            raise EndpointRefused(
                f"the endpoint host {host!r} resolves to {', '.join(refused) or 'nothing'}: loopback, "
                "link-local and private addresses need DOCTORAI_SUBSCRIPTION_ALLOWED_ENDPOINTS"
            )
        return addresses

    def check(self, url: str) -> None:
        """Resolve the endpoint's host now (blocking) and refuse it unless every address is allowed."""
        host, port = self.target(url)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise EndpointRefused(f"the endpoint host {host!r} cannot be resolved: {exc}") from None
        self.check_addresses(host, found)


class _CheckedNetwork(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows: it resolves the host itself and dials the checked address."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, check every address, then connect to the first (TLS still verifies `host`)."""
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        address = self.policy.check_addresses(host, found)[0]
        return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: endpoints are network addresses."""
        raise EndpointRefused("notifications are not sent to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """As the default backend sleeps."""
        await self.inner.sleep(seconds)


def transport(policy: EndpointPolicy) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go only where the policy allows."""
    checked = httpx.AsyncHTTPTransport()
    # httpx takes no network backend of its own; its pool is httpcore's, which does.
    checked._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(), network_backend=_CheckedNetwork(policy)
    )
    return checked
