"""Host and Origin checks on the HTTP transport, against DNS rebinding.

Owns: which `Host` and `Origin` header values the HTTP endpoints accept. A web
page on evil.example.com whose name resolves to 127.0.0.1 makes the browser
send `Host: evil.example.com` (and that Origin); such requests are refused
(421 for the Host, 403 for the Origin) before any MCP handling. Loopback names
(localhost, 127.0.0.1, [::1], any port) are always accepted; so is the address
the gateway was told to bind, when it is a specific one; `[gateway]
allowed_hosts` / `allowed_origins` add more (a reverse proxy's public name), and
so do `[auth] public_url` (its host and origin) and `[gateway] cors_origins`.

Whether an address is loopback is `is_loopback`'s to say, here and in
`auth.check_exposure` alike: a gateway bound to 127.0.0.2 is loopback to both
(no `[auth]` needed; its own address is accepted as the bound one).

The check itself is the mcp SDK's `TransportSecurityMiddleware`. The SDK runs
it on the MCP endpoint only; `HostCheck` runs it in front of every route
(`/healthz`, the OAuth metadata, unknown paths), so a rebound page can read
nothing at all. This module builds its settings so the check is always on (the
SDK turns it off for non-loopback binds).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request

from mcpgw.config import Registry
from mcpgw.server.edge import OWS, stripped

logger = logging.getLogger("mcpgw.hostcheck")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""The names clients use for a gateway on their own machine: always accepted, whatever the bind.
A list of names, not a loopback test (that is `is_loopback`)."""
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """The one loopback rule: `localhost`, or an address in 127.0.0.0/8 or ::1 (bracketed or not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _host_patterns(host: str) -> list[str]:
    """A configured host as the SDK matches it: exact `name:port`, or `name` with and without any port."""
    if host.endswith(":*") or (host.rsplit(":", 1)[-1].isdigit() and not host.endswith("]")):
        return [host]
    return [host, f"{host}:*"]


def _origin_patterns(host: str) -> list[str]:
    """A host as the origin of a page: either scheme, with and without any port."""
    return [f"{scheme}://{host}{port}" for scheme in ("http", "https") for port in ("", ":*")]


def transport_security(registry: Registry, *, bind: str) -> TransportSecuritySettings:
    settings = registry.gateway
    names = list(LOOPBACK_NAMES)
    if bind not in WILDCARD_BINDS and _bracketed(bind) not in names:
        names.append(_bracketed(bind))  # a specific address, loopback (127.0.0.2) or not
    hosts = [pattern for name in names for pattern in _host_patterns(name)]
    origins = [pattern for name in names for pattern in _origin_patterns(name)]
    for host in settings.allowed_hosts:
        hosts += _host_patterns(host)
    origins += settings.allowed_origins
    if registry.auth is not None:  # the gateway as clients reach it, e.g. through a reverse proxy
        public = urlsplit(registry.auth.public_url)
        hosts.append(public.netloc)
        origins.append(f"{public.scheme}://{public.netloc}")
    origins += settings.cors_origins
    if bind in WILDCARD_BINDS and not settings.allowed_hosts:
        logger.warning(
            "listening on every address, but only loopback Host headers are accepted "
            "(DNS-rebinding guard); name this machine in [gateway].allowed_hosts to serve other clients"
        )
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


PASSED = 256
"""Host and Origin pairs remembered as accepted (then the memory starts again)."""


class HostCheck:
    """ASGI middleware: every HTTP request's Host and Origin are checked before any route sees it.

    The pairs of values the check accepted are remembered: its settings do not change (a reload
    that changes them builds a new `HostCheck`), and clients send the same few pairs request after
    request, so each is checked once. Only accepted pairs are kept: a refused one is checked (and
    logged) every time.

    `field_values`: first hand on every header value without the whitespace around it
    (`edge.stripped`, which says why), in the same pass over the headers: one layer in front of
    every request, not two (`http.http_app` and the standalone console, where it is the outermost)."""

    def __init__(self, app: Any, *, settings: TransportSecuritySettings, field_values: bool = False) -> None:
        self.app = app
        self.security = TransportSecurityMiddleware(settings)
        self.field_values = field_values
        self._passed: set[tuple[bytes | None, bytes | None]] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = origin = None
            strip, dirty = self.field_values, False
            for key, value in scope["headers"]:
                # Whether stripping would change a value (`bytes.strip` gives the value itself back
                # when it would not): a fifth of the CPU of a regular expression over them all.
                if strip and not dirty and value != value.strip(OWS):
                    dirty = True
                if key == b"host":
                    if host is None:
                        host = value
                elif key == b"origin" and origin is None:
                    origin = value
            if dirty:  # the first Host and Origin of the stripped headers are these, stripped
                scope = stripped(scope)
                host = host.strip(OWS) if host is not None else None
                origin = origin.strip(OWS) if origin is not None else None
            pair = host, origin
            if pair not in self._passed:
                # is_post=False: the content type is the MCP endpoint's to check, not every route's.
                refusal = await self.security.validate_request(Request(scope), is_post=False)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
                if len(self._passed) >= PASSED:
                    self._passed.clear()
                self._passed.add(pair)
        await self.app(scope, receive, send)
