"""Who may talk to the web app, and how many at once.

`SameOriginGuard` answers 403 to a request whose `Host` is not an address of this server (DNS rebinding) or
whose `Origin` is another site (a page the user visits posting to 127.0.0.1), so only the app's own page,
tools without an `Origin` (curl, scripts) and explicitly allowed origins (a reverse proxy) get through.
`Admission` bounds the requests in progress: past its capacity the answer is 503 with `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def netloc(host: str, port: int | None) -> str:
    """`host:port` as a `Host` header writes it: IPv6 in brackets, no port for 80 or when unknown."""
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port in (None, 80) else f"{host}:{port}"


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]` in lower case; ValueError for anything else (paths, no host, other schemes)."""
    parts = urlsplit(origin.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ValueError(f"allowed origin must look like https://host[:port]. Received: {origin!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


class SameOriginGuard:
    """ASGI middleware refusing (403) requests for another `Host` or from another `Origin`.

    This server's hosts are the loopback names, `host` (the address the server was told to bind) and the
    address the connection reached, each with the port the connection reached; the hosts of
    `allowed_origins` (as `normalize_origin` writes them) are allowed too. A request may carry no `Origin`;
    if it does, it must be `http://` + one of this server's hosts, or one of `allowed_origins`.
    """

    def __init__(self, app, host: str, allowed_origins: Iterable[str] = ()):
        self.app = app
        self.names = {name.lower() for name in (*LOOPBACK_NAMES, host)}
        self.extra_origins = set(allowed_origins)
        self.extra_hosts = {urlsplit(origin).netloc for origin in self.extra_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def local_hosts(self, scope) -> set[str]:
        """This server's `Host` values: each allowed name with the port the connection reached."""
        address, port = scope.get("server") or (None, None)
        if port is None:
            return set()
        return {netloc(name, port) for name in self.names | {str(address).lower()}}

    def refusal(self, scope) -> str | None:
        """Why the request is refused, or None."""
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        local = self.local_hosts(scope)
        host = headers.get("host", "").lower()
        if host not in local | self.extra_hosts:
            return f"host {host!r} is not this server (allowed: {', '.join(sorted(local | self.extra_hosts))})"
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in {f"http://{name}" for name in local} | self.extra_origins:
            return f"origin {origin!r} may not call this server (a proxy's origin can be added with --allow-origin)"
        return None


class Admission:
    """At most `capacity` requests in progress at once; `enter()` says False when the server is full.

    Used from the event loop only (no await between the check and the count), so it needs no lock.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.active = 0

    def enter(self) -> bool:
        if self.active >= self.capacity:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1
