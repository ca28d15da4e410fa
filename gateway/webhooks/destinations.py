"""Which webhook URLs and addresses the gateway may call: the SSRF guard.

An endpoint URL must be https (http only to a loopback address, and only when
GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK=true). Every address its host resolves to must be
public: private, loopback, link-local (cloud metadata lives at 169.254.169.254 and fd00:ec2::254),
shared, multicast and reserved ranges are refused unless GATEWAY_WEBHOOK_ALLOWED_NETWORKS lists
them. The check runs when an endpoint is saved and again at every delivery, and the delivery
connects to the very address that was checked (`PinnedResolver`), so a DNS answer that changes
between the check and the connect (rebinding) cannot steer a delivery inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.webhooks.errors import DestinationRefused, UnsafeDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Returns the addresses `host` resolves to (the event loop's getaddrinfo in production).
Resolve = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_CHARS = 2000


@dataclass(frozen=True)
class DestinationPolicy:
    allow_insecure_loopback: bool = False
    allowed_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(
        cls, allow_insecure_loopback: bool, networks: Sequence[str]
    ) -> DestinationPolicy:
        return cls(
            allow_insecure_loopback=allow_insecure_loopback,
            allowed_networks=tuple(ipaddress.ip_network(n, strict=False) for n in networks),
        )

    def address_allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allowed_networks):
            return True
        return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Target:
    """A URL that passed the static checks: scheme, host and port."""

    url: str
    scheme: str
    host: str
    port: int


def check_url(url: str, policy: DestinationPolicy) -> Target:
    """Static checks of an endpoint URL (no DNS); UnsafeDestination says why it is refused."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeDestination(f"url: at most {MAX_URL_CHARS} characters", extra={"field": "url"})
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UnsafeDestination("url: the port is not valid", extra={"field": "url"}) from None
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise UnsafeDestination("url: must be an absolute https URL", extra={"field": "url"})
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and lists; receivers verify signatures instead.
        raise UnsafeDestination("url: must not carry credentials", extra={"field": "url"})
    if parts.fragment:
        raise UnsafeDestination("url: must not have a fragment", extra={"field": "url"})
    if parts.scheme == "http" and not (policy.allow_insecure_loopback and _is_loopback_name(host)):
        raise UnsafeDestination(
            "url: must be https (http is allowed only to a loopback address with "
            "GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK=true)",
            extra={"field": "url"},
        )
    return Target(url=url, scheme=parts.scheme, host=host, port=port or _default_port(parts.scheme))


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the operating system's resolver (off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def checked_addresses(
    target: Target, policy: DestinationPolicy, resolve: Resolve
) -> list[IPAddress]:
    """Every address the target's host resolves to, once each is allowed; DestinationRefused
    (code refused_address or unresolvable) otherwise. One refused address refuses the host:
    a name that points inside as well as outside is not a public endpoint."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            found = [
                ipaddress.ip_address(a.split("%", 1)[0])
                for a in await resolve(target.host, target.port)
            ]
        except (OSError, ValueError):
            raise DestinationRefused("the host does not resolve", code="unresolvable") from None
    if not found:
        raise DestinationRefused("the host does not resolve", code="unresolvable")
    insecure_ok = target.scheme == "http" and policy.allow_insecure_loopback
    for address in found:
        if insecure_ok and address.is_loopback:
            continue
        if target.scheme == "http" and not address.is_loopback:
            raise DestinationRefused("http is only for loopback", code="insecure_url")
        if not policy.address_allowed(address):
            raise DestinationRefused(
                "the host resolves to a private, loopback, link-local or reserved address",
                code="refused_address",
            )
    return found


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses already checked: the connection
    goes to what `checked_addresses` allowed, never to a second DNS answer."""

    def __init__(self, host: str, addresses: Sequence[IPAddress]) -> None:
        self._host = host
        self._addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"not a checked host: {host!r}")
        return [
            {
                "hostname": host,
                "host": str(a),
                "port": port,
                "family": socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in self._addresses
        ]

    async def close(self) -> None:
        return None
