"""One place that says whether a value is usable. Plain Python, no Django.

Used at run time (arguments, settings read on access) and by the system
checks, so both say the same thing. ``what`` names the value in the message:
``"setting STREAMER_CHUNK_SIZE"``, ``"stream 'x': chunk_size"``,
``"limit_concurrency: limit"``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection

__all__ = [
    "boolean",
    "is_number",
    "network_list",
    "non_negative_int",
    "non_negative_number",
    "one_of",
    "optional_path",
    "optional_redis_prefix",
    "optional_redis_url",
    "optional_str",
    "positive_int",
    "positive_number",
    "str_list",
    "whole_seconds",
]


def is_number(value: object) -> bool:
    """An int or float that is not a bool (``True`` is an int to Python)."""
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _fail(what: str, expected: str, value: object) -> ValueError:
    return ValueError(f"{what} must be {expected}, not {type(value).__name__} {value!r}")


def positive_int(value: object, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(what, "a positive int", value)
    return value


def non_negative_int(value: object, *, what: str) -> int:
    """An int >= 0 (a count, or milliseconds such as an SSE ``retry``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(what, "an int >= 0", value)
    return value


def whole_seconds(value: object, *, what: str) -> int:
    """An int >= 0 (``Retry-After`` and the like)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(what, "whole seconds (an int >= 0)", value)
    return value


def non_negative_number(value: object, *, what: str) -> float:
    # ``not value >= 0`` is also true for NaN.
    if not is_number(value) or not value >= 0:  # type: ignore[operator]
        raise _fail(what, "a number of seconds >= 0", value)
    return float(value)  # type: ignore[arg-type]


def positive_number(value: object, *, what: str) -> float:
    if not is_number(value) or not value > 0:  # type: ignore[operator]
        raise _fail(what, "a number of seconds > 0", value)
    return float(value)  # type: ignore[arg-type]


def one_of(value: object, choices: Collection[object], *, what: str) -> object:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{what} must be one of {listed}, not {value!r}")
    return value


def str_list(value: object, *, what: str) -> list[str]:
    """A list or tuple of str; a bare str is refused (it would iterate by character)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _fail(what, "a list of str", value)
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{what} must hold only str, not {type(item).__name__} {item!r}")
    return list(value)


def boolean(value: object, *, what: str) -> bool:
    """True or False only: ``"no"`` or ``0`` would read as a different intent."""
    if not isinstance(value, bool):
        raise _fail(what, "True or False", value)
    return value


def optional_str(value: object, *, what: str) -> str | None:
    """None or a non-empty str (a dotted path, a META key, a token)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(what, "a non-empty str or None", value)
    return value


def optional_path(value: object, *, what: str) -> str | None:
    """None or a filesystem path (``str`` or ``os.PathLike``), returned as a str."""
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            return path
    raise _fail(what, "a directory path or None", value)


def network_list(value: object, *, what: str) -> list[str]:
    """A list or tuple of addresses or CIDR networks, each checked by ``ipaddress``.

    A bare str is refused: ``"10.0.0.0/8"`` would iterate by character.
    """
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _fail(what, "a list of networks such as ['10.0.0.0/8']", value)
    bad = []
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except (TypeError, ValueError):
            bad.append(repr(item))
    if bad:
        raise ValueError(f"{what} has entries that are not addresses or networks: {', '.join(bad)}")
    return list(value)


def optional_redis_url(value: object, *, what: str) -> str | None:
    """None, or a ``redis://``, ``rediss://`` or ``unix://`` URL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise _fail(what, "a redis://, rediss:// or unix:// URL", value)
    return value


def optional_redis_prefix(value: object, *, what: str) -> str | None:
    """None, or up to 64 printable characters with no space and no ``{`` or ``}``.

    Braces are Redis Cluster hash tags: the keys under the prefix place their
    own, and a brace in the prefix would decide the slot instead.
    """
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 64
        or not value.isprintable()
        or any(c.isspace() or c in "{}" for c in value)
    ):
        raise _fail(what, "a str of 1-64 characters without spaces or braces, or None", value)
    return value
