"""SSRF guard for fetching urls that came from the web (search results, user image urls).

A url is fetched only if its scheme is http(s) and every address its host resolves to is a
public one: not private, loopback, link-local, multicast, reserved or unspecified, and not
an IPv6 tunnel address that embeds an IPv4 one (6to4 ``2002::/16``, Teredo ``2001::/32``:
``2002:a9fe:a9fe::1`` is 169.254.169.254 behind a relay). A url httpx cannot parse (an octal
IPv4 host like ``0177.0.0.1``) is refused before any I/O. The check
runs inside the connection itself (a guarded httpcore network backend), so it applies again
to every redirect hop and to the address actually connected to — a name that resolves to a
public address when checked and a private one when connected (DNS rebinding) cannot slip
through. Tests may allow loopback explicitly; nothing else can be allowed.

Not a proxy or an allow-list: hosts are judged only by their addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

ALLOWED_SCHEMES = frozenset({"http", "https"})
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedUrl(Exception):
    """The url or the address behind it must not be fetched; the message is safe to show."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a guarded fetch may connect to."""

    allow_loopback: bool = False
    """Only for tests that serve pages from 127.0.0.1."""

    def check(self, address: IPAddress) -> None:
        if isinstance(address, ipaddress.IPv6Address):
            if address.sixtofour is not None or address.teredo is not None:
                raise BlockedUrl("refused to fetch an IPv6 tunnel (6to4/Teredo) address")
            if address.ipv4_mapped is not None:
                address = address.ipv4_mapped
        if address.is_loopback:
            if self.allow_loopback:
                return
            raise BlockedUrl("refused to fetch a loopback address")
        if (
            address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or not address.is_global
        ):
            raise BlockedUrl("refused to fetch a private or reserved address")


def check_url(url: str) -> None:
    """Refuses a url whose scheme is not http(s), that has no host or that httpx cannot
    parse (before any I/O)."""
    try:
        httpx.URL(url)
        parts = urlsplit(url)
    except (httpx.InvalidURL, ValueError):
        raise BlockedUrl("refused a malformed url") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise BlockedUrl(f"refused url scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise BlockedUrl("refused url without a host")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise httpcore.ConnectError(f"cannot resolve host ({err.__class__.__name__})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        addresses.append(ipaddress.ip_address(text))
    if not addresses:
        raise httpcore.ConnectError("host has no address")
    return addresses


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves, checks every address, then connects to a checked address literal."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port)
        for address in addresses:
            self.policy.check(address)
        # TLS still verifies and sends SNI for the url's host name: httpcore passes the
        # origin host to start_tls, not this literal.
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)


def guarded_transport(policy: AddressPolicy) -> httpx.HTTPTransport:
    """An httpx transport whose every connection (redirects included) passes ``policy``."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx exposes no hook for the network backend; the pool attribute is stable in the
    # pinned httpx/httpcore versions and a test fails if that changes.
    pool = transport._pool
    if not isinstance(pool, httpcore.ConnectionPool):
        raise RuntimeError("unexpected httpx transport internals; the SSRF guard cannot attach")
    pool._network_backend = _GuardedBackend(policy)
    return transport


def guarded_client(policy: AddressPolicy, *, timeout_s: float) -> httpx.Client:
    """A client for untrusted urls: guarded connections, no env proxies, checked redirects."""

    def on_request(request: httpx.Request) -> None:
        check_url(str(request.url))

    return httpx.Client(
        transport=guarded_transport(policy),
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,
        follow_redirects=True,
        max_redirects=5,
        event_hooks={"request": [on_request]},
    )


def read_capped(client: httpx.Client, url: str, max_bytes: int) -> bytes:
    """GETs ``url`` (checked) and returns its body; more than ``max_bytes`` is a ``ValueError``.

    Network failures raise ``httpx.HTTPError``; refused urls ``BlockedUrl``.
    """
    check_url(url)
    data = bytearray()
    with client.stream("GET", url) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > max_bytes:
                raise ValueError(f"body larger than {max_bytes} bytes")
    return bytes(data)
