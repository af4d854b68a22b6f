"""Who a request is, for limiter keys and the metrics allowlist."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import cast

from django.http import HttpRequest

from .conf import conf

__all__ = ["KeyFunc", "client_ip", "in_networks", "key_function"]

KeyFunc = Callable[[HttpRequest], "str | None"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(listed: tuple[str, ...]) -> tuple[Network, ...]:
    # conf has validated every entry; parse them once per value, not per request.
    return tuple(ipaddress.ip_network(net, strict=False) for net in listed)


def in_networks(address: str, listed: list[str]) -> bool:
    """Whether ``address`` (an IP address, else never) is in one of ``listed``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(tuple(listed)))


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or, from a trusted proxy, the client STREAMER_IP_HEADER names.

    The header is read only when the peer (REMOTE_ADDR) is in
    STREAMER_TRUSTED_PROXIES, or is no IP address (a Unix socket, which only
    this machine can reach): anyone else could write it. Its entries are read
    from the right, past those of trusted proxies: the first other one is the
    address the last trusted proxy saw; entries to its left came from the
    client and can be forged. ``host:port`` and ``[v6]:port`` are reduced to
    the address. An entry that is no address (``unknown``, empty) is returned
    as it is: the allowlist then refuses it, and ``key="ip"`` keys on it,
    rather than on REMOTE_ADDR (the proxy), which every such client shares.
    """
    peer = str(request.META.get("REMOTE_ADDR", ""))
    header = conf.STREAMER_IP_HEADER
    if not header or not _trusted_peer(peer):
        return peer
    value = request.META.get(header)
    if value is None:
        return peer
    trusted = conf.STREAMER_TRUSTED_PROXIES
    entries = [entry.strip() for entry in str(value).split(",")]
    for entry in reversed(entries):
        address = _address(entry)
        if address is None or not in_networks(address, trusted):
            return address or entry
    return _address(entries[0]) or entries[0]  # every hop a trusted proxy


def _trusted_peer(peer: str) -> bool:
    if _address(peer) is None:
        return True  # a Unix socket: REMOTE_ADDR is empty or a path
    return in_networks(peer, conf.STREAMER_TRUSTED_PROXIES)


def _address(entry: str) -> str | None:
    """The address in ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80``."""
    if entry.startswith("["):
        host, bracket, _ = entry[1:].partition("]")
        candidate = host if bracket else entry
    elif entry.count(":") == 1:
        candidate = entry.partition(":")[0]
    else:
        candidate = entry
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _key_ip(request: HttpRequest) -> str:
    return "ip:" + client_ip(request)


def _key_user(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return "ip:" + client_ip(request)


def _key_header(meta_name: str) -> KeyFunc:
    def key(request: HttpRequest) -> str:
        # Requests without the header share one slot set, so omitting it
        # cannot get around the limit.
        return "header:" + str(request.META.get(meta_name, ""))

    return key


def key_function(spec: object) -> KeyFunc | None:
    """Turn a ``key=`` argument into a function, or fail naming what is wrong."""
    if spec is None:
        return None
    if callable(spec):
        return cast(KeyFunc, spec)
    if spec == "ip":
        return _key_ip
    if spec == "user":
        return _key_user
    if isinstance(spec, str) and spec.startswith("header:") and spec[7:].strip():
        name = spec[7:].strip()
        return _key_header("HTTP_" + name.upper().replace("-", "_"))
    raise ValueError(
        f"limit_concurrency: key={spec!r} is not a key spec: use None, 'ip', 'user', "
        "'header:X-Name' or a callable (request) -> str | None"
    )
