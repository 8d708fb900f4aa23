"""HTTP to one registry: persistent connections, TLS, proxies, retries with backoff, ``Location``
resolution.

Plain ``http.client`` (see README, Registries, for the measurement behind that choice): one
persistent connection per thread and origin; ``CONNECT`` through an HTTP proxy for HTTPS.
Only replayable requests are retried as they are (the caller says which); a 429 means the
request was not processed, so it is resent whatever its method.
"""

from __future__ import annotations

import email.utils
import http.client
import os
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import NoReturn

from layouttool.registry.errors import (
    ProxyError,
    RegistryError,
    TLSError,
    TransientError,
    clean,
)
from layouttool.registry.proxy import ProxyConfig, proxy_for
from layouttool.registry.tls import TLSFiles, describe_tls_error, make_context

#: first wait before a retry, in seconds; doubled for each further try, with jitter
RETRY_BACKOFF = 0.5
#: the longest single wait, whatever ``Retry-After`` asks for
RETRY_MAX_WAIT = 30.0

#: (scheme, host[:port], path?query): where a request goes
Target = tuple[str, str, str]
#: a request body: bytes, or a function giving a fresh iterator of pieces
Body = bytes | Callable[[], Iterator[bytes]] | None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Response:
    """A response whose body has not been read yet (stream it with :meth:`read`).

    Use it as a context manager (or call :meth:`close`): a body left unread makes the
    persistent connection unusable, so closing early drops that connection.
    """

    def __init__(
        self, transport: Transport, method: str, target: Target, resp: http.client.HTTPResponse
    ) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.target = target
        self._transport = transport
        self._resp = resp
        length = resp.headers.get("Content-Length", "")
        self._length = int(length) if length.isdigit() and method != "HEAD" else None
        self._got = 0

    def read(self, n: int = -1, /) -> bytes:
        """Read the body (a connection lost mid-body is a :class:`TransientError`)."""
        try:
            data = self._resp.read(n) if n >= 0 else self._resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._lost(str(exc))
        self._got += len(data)
        # http.client reports a body cut short of its Content-Length as a plain end of file
        if (
            (not data or n < 0)
            and n != 0
            and self._length is not None
            and self._got < self._length
        ):
            self._lost(f"closed after {self._got} of {self._length} bytes")
        return data

    def _lost(self, why: str) -> NoReturn:
        self._transport.drop_conn(self.target[0], self.target[1])
        raise TransientError(
            f"{self._transport.registry}: connection lost while reading a response: "
            f"{clean(why, 120)}"
        )

    def header(self, name: str) -> str | None:
        """A response header."""
        return self.headers.get(name)

    def close(self) -> None:
        """Release the connection (dropping it when the body was not read to the end)."""
        if not self._resp.isclosed():
            self._resp.close()
            self._transport.drop_conn(self.target[0], self.target[1])

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Conn:
    """A persistent connection, and how requests on it are written."""

    __slots__ = ("conn", "headers", "prefix")

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        prefix: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.conn = conn
        #: ``http://host`` when requests go to a proxy in absolute form, else ""
        self.prefix = prefix
        #: headers for the proxy on every request (``Proxy-Authorization``)
        self.headers = headers or {}


class Transport:
    """Connections to a registry and to the hosts it sends us to (thread-safe).

    ``registry`` names the registry in messages; ``host`` and ``scheme`` are its origin.
    ``tls`` holds the certificate directory's CAs and client pair (default: looked up for
    ``registry``); every HTTPS connection, to the registry or elsewhere (token realm, CDN),
    verifies against the system's CAs plus those. Proxies come from the environment
    (:mod:`~layouttool.registry.proxy`). ``retries`` bounds the retries of one request;
    ``backoff`` is the first wait in seconds (doubled each time, jittered, at most
    ``max_wait``); ``sleep`` is how to wait (injectable so tests need not).
    """

    def __init__(
        self,
        registry: str,
        host: str,
        *,
        insecure: bool = False,
        tls: TLSFiles | None = None,
        retries: int = 5,
        timeout: float = 120.0,
        backoff: float | None = None,
        max_wait: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.host = host
        self.scheme = "http" if insecure else "https"
        self.tls = tls if tls is not None else TLSFiles(None)
        self.retries = max(0, retries)
        self.timeout = timeout
        self.backoff = RETRY_BACKOFF if backoff is None else backoff
        self.max_wait = RETRY_MAX_WAIT if max_wait is None else max_wait
        self._sleep = sleep
        self._env = dict(os.environ if env is None else env)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: set[http.client.HTTPConnection] = set()
        self._requests = 0
        self._context: ssl.SSLContext | None = None
        self._proxies: dict[tuple[str, str], ProxyConfig | None] = {}

    @property
    def requests(self) -> int:
        """HTTP requests sent (retries included)."""
        return self._requests

    def context(self) -> ssl.SSLContext:
        """The TLS context of every HTTPS connection (made once)."""
        with self._lock:
            if self._context is None:
                self._context = make_context(self.tls)
            return self._context

    def proxy(self, scheme: str, host: str) -> ProxyConfig | None:
        """The proxy requests to ``scheme://host`` go through (None: direct)."""
        key = (scheme, host)
        with self._lock:
            if key in self._proxies:
                return self._proxies[key]
        found = proxy_for(scheme, host, self._env)
        with self._lock:
            self._proxies[key] = found
        return found

    def _conn(self, scheme: str, host: str) -> _Conn:
        conns: dict[tuple[str, str], _Conn] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get((scheme, host))
        if c is None:
            proxy = self.proxy(scheme, host)
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    proxy.address if proxy else host, timeout=self.timeout, context=self.context()
                )
                if proxy is not None:
                    # CONNECT host:port: the proxy resolves the name, TLS runs end to end
                    conn.set_tunnel(host, headers=proxy.headers())
                c = _Conn(conn)
            elif proxy is not None:
                conn = http.client.HTTPConnection(proxy.address, timeout=self.timeout)
                c = _Conn(conn, f"http://{host}", proxy.headers())
            else:
                c = _Conn(http.client.HTTPConnection(host, timeout=self.timeout))
            conns[(scheme, host)] = c
            with self._lock:
                self._all.add(c.conn)
        return c

    def drop_conn(self, scheme: str, host: str) -> None:
        """Close this thread's connection to ``scheme://host`` (it is in an unknown state)."""
        conns = getattr(self._local, "conns", {})
        c = conns.pop((scheme, host), None)
        if c is not None:
            c.conn.close()
            with self._lock:
                self._all.discard(c.conn)

    def close(self) -> None:
        """Close every connection any thread opened."""
        with self._lock:
            conns, self._all = self._all, set()
        for c in conns:
            c.close()

    def send(self, method: str, target: Target, headers: dict[str, str], body: Body) -> Response:
        """Send one request and return its response, body unread (no retry).

        A TLS failure raises :class:`TLSError` and a proxy's refusal :class:`ProxyError`
        (neither is worth retrying); other connection errors raise as they are.
        """
        scheme, host, path = target
        c = self._conn(scheme, host)
        with self._lock:
            self._requests += 1
        conn, url = c.conn, c.prefix + path
        if c.headers:
            headers = {**headers, **c.headers}
        try:
            if callable(body):
                conn.putrequest(method, url, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                for piece in body():
                    conn.send(piece)
            else:
                conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
        except ssl.SSLError as exc:
            self.drop_conn(scheme, host)
            if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
                raise  # the connection was cut: a transient failure
            own = host == self.host
            raise TLSError(
                f"{self.registry}: {describe_tls_error(host, exc, self.tls, own=own)}"
            ) from None
        except OSError as exc:
            self.drop_conn(scheme, host)
            text = str(exc)
            if text.startswith("Tunnel connection failed"):
                self._proxy_refused(scheme, host, text, exc)
            raise
        except http.client.HTTPException:
            self.drop_conn(scheme, host)
            raise
        return Response(self, method, target, resp)

    def _proxy_refused(self, scheme: str, host: str, text: str, exc: OSError) -> None:
        """A CONNECT the proxy answered with an error: 5xx is retried, the rest is final."""
        proxy = self.proxy(scheme, host)
        status = text.removeprefix("Tunnel connection failed:").strip()
        name = proxy.display if proxy is not None else "the proxy"
        if status[:1] == "5":
            return  # the proxy could not reach the registry (yet): retried as any 5xx
        hint = " (check the credentials in the proxy URL)" if status.startswith("407") else ""
        raise ProxyError(
            f"{self.registry}: proxy {name} refused to connect to {host}: "
            f"{clean(status, 80)}{hint}"
        ) from exc

    def resolve(self, location: str, base: Target | None = None) -> Target:
        """Where a ``Location`` header points, resolved against the request that sent it."""
        scheme, host, path = base or (self.scheme, self.host, "/v2/")
        u = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{path}", location))
        if u.scheme not in ("http", "https") or not u.netloc:
            raise RegistryError(f"{self.registry}: unusable Location {clean(location, 120)!r}")
        new_scheme = u.scheme
        if u.netloc == self.host and self.scheme == "https":
            new_scheme = "https"  # never downgrade our own origin (the token would go in clear)
        return new_scheme, u.netloc, (u.path or "/") + (f"?{u.query}" if u.query else "")

    def wait(self, attempt: int, hint: float | None = None) -> None:
        """Sleep before retry number ``attempt`` (``hint``: what ``Retry-After`` asked for)."""
        if hint is not None:
            delay = hint
        else:
            delay = self.backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        delay = min(delay, self.max_wait)
        if delay > 0:
            self._sleep(delay)

    def retrying(
        self,
        method: str,
        target: Target,
        headers: dict[str, str],
        body: Body,
        what: str,
        *,
        replay: bool,
    ) -> Response:
        """Send once, retrying what may be retried; return the last response (any status)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self.send(method, target, headers, body)
            except (OSError, http.client.HTTPException) as exc:
                reason = clean(str(exc) or type(exc).__name__, 120)
                if not replay:
                    raise TransientError(f"{self.registry}: {method} {what}: {reason}") from exc
                if attempt > self.retries:
                    raise RegistryError(
                        f"{self.registry}: {method} {what}: {reason} (gave up after {attempt} "
                        "tries)"
                    ) from exc
                self.wait(attempt)
                continue
            if resp.status == 429 or resp.status >= 500:
                if not replay and resp.status != 429:
                    return resp
                if attempt > self.retries:
                    return resp
                hint = retry_after(resp.header("Retry-After"))
                with resp:
                    resp.read(64 << 10)
                self.wait(attempt, hint)
                continue
            return resp

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RETRY_BACKOFF", "RETRY_MAX_WAIT", "Body", "Response", "Target", "Transport",
           "retry_after"]
