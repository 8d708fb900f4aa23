"""Which proxy a request goes through: ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``.

The rules of Go's ``net/http`` (``ProxyFromEnvironment``), which skopeo, docker and crane use:

* ``HTTPS_PROXY`` for ``https://`` requests, ``HTTP_PROXY`` for ``http://`` ones; each name in
  upper case first, then lower case. A value without a scheme is ``http://``. Only ``http://``
  proxies are supported (an HTTPS request goes through them with ``CONNECT``); ``https://`` and
  ``socks5://`` proxies are refused with an error rather than bypassed.
* ``localhost`` and loopback addresses never go through a proxy.
* ``NO_PROXY`` (or ``no_proxy``): comma-separated entries, each an IP address, a CIDR range, a
  domain name (``example.com`` matches it and its subdomains, ``.example.com`` only the
  subdomains, ``*.example.com`` is ``.example.com``) or ``*`` (no proxy at all); an IP or
  a domain may carry a ``:PORT``.

With ``CONNECT`` the proxy resolves the registry's name: we never look it up ourselves.
Proxy credentials (``http://user:pass@proxy:3128``) go in ``Proxy-Authorization`` and never
appear in a message.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from layouttool.errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """One proxy: where it listens, its credentials (as a header value), how to name it."""

    #: ``host:port`` of the proxy
    address: str
    #: the URL with any password removed, for messages
    display: str
    #: the ``Proxy-Authorization`` value, when the URL carried credentials
    authorization: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """Headers every request (or CONNECT) to the proxy carries."""
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name.upper()) or env.get(name.lower()) or ""


def split_host_port(hostport: str, default_port: str = "") -> tuple[str, str]:
    """``host:port``, ``[v6]:port`` or a bare host -> ``(host, port)`` (host lower-cased)."""
    hostport = hostport.strip()
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    else:
        host, port = hostport, ""  # a bare IPv6 address, or a name
    return host.lower().rstrip("."), port or default_port


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_proxy_url(value: str, variable: str) -> ProxyConfig:
    """A proxy URL from ``variable`` (e.g. ``http://user:pw@proxy:3128``)."""
    raw = value.strip()
    if "://" not in raw:
        raw = "http://" + raw
    u = urllib.parse.urlsplit(raw)
    if u.scheme != "http":
        raise InvalidInputError(
            f"${variable}: {u.scheme}:// proxies are not supported (only http://, which carries "
            "HTTPS with CONNECT)"
        )
    try:
        port = u.port or 80
    except ValueError:
        raise InvalidInputError(f"${variable}: invalid proxy port") from None
    if not u.hostname:
        raise InvalidInputError(f"${variable}: no proxy host in the URL")
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    auth = None
    if u.username is not None:
        user = urllib.parse.unquote(u.username)
        pw = urllib.parse.unquote(u.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    return ProxyConfig(f"{host}:{port}", f"http://{host}:{port}", auth)


def _no_proxy_match(entries: str, host: str, port: str) -> bool:
    ip = _ip(host)
    for raw in entries.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip in net:
                return True
            continue
        ehost, eport = split_host_port(entry)
        if eport and eport != port:
            continue
        eip = _ip(ehost)
        if eip is not None:
            if ip is not None and ip == eip:
                return True
            continue
        if ip is not None or not ehost:
            continue  # a domain entry never matches an address
        if ehost.startswith("*."):
            ehost = ehost[1:]
        if ehost.startswith("."):
            if host.endswith(ehost):
                return True
        elif host == ehost or host.endswith("." + ehost):
            return True
    return False


def proxy_for(
    scheme: str, hostport: str, env: Mapping[str, str] | None = None
) -> ProxyConfig | None:
    """The proxy a request to ``scheme://hostport`` goes through, or None (direct)."""
    env = os.environ if env is None else env
    variable = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    value = _env(env, variable)
    if not value:
        return None
    host, port = split_host_port(hostport, "443" if scheme == "https" else "80")
    ip = _ip(host)
    if host == "localhost" or (ip is not None and ip.is_loopback):
        return None
    if _no_proxy_match(_env(env, "NO_PROXY"), host, port):
        return None
    return parse_proxy_url(value, variable)


__all__ = ["ProxyConfig", "parse_proxy_url", "proxy_for", "split_host_port"]
