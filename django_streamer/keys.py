"""Who a request is, for limiter keys and the metrics allowlist."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import cast

from django.http import HttpRequest

from .conf import conf

__all__ = ["KeyFunc", "client_ip", "key_function"]

KeyFunc = Callable[[HttpRequest], "str | None"]


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the right-most entry of STREAMER_IP_HEADER when it is set.

    The right-most entry is the one your own proxy added; entries to its left
    came from the client and can be forged. ``host:port`` and ``[v6]:port`` are
    reduced to the address. An entry that is no address (``unknown``, empty) is
    returned as it is: the allowlist then refuses it, and ``key="ip"`` keys on
    it, rather than on REMOTE_ADDR (the proxy), which every such client shares.
    """
    header = conf.STREAMER_IP_HEADER
    if header:
        value = request.META.get(header)
        if value is not None:
            entry = str(value).rsplit(",", 1)[-1].strip()
            return _address(entry) or entry
    return str(request.META.get("REMOTE_ADDR", ""))


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
