"""``Accept-Encoding`` negotiation as RFC 9110 section 12.5.3 defines it. Plain Python.

Rules, each with a row in tests/test_negotiate.py:

* No header: identity. RFC 9110 allows any coding then, but a client that
  sends nothing (curl without ``--compressed``, many scripts) rarely decodes.
* Codings and ``q`` are case-insensitive; spaces and tabs around ``,`` and
  ``;`` are allowed; empty list elements are skipped.
* ``q`` follows the grammar: 0 to 1 with at most three decimals. An element
  with a malformed ``q``, another parameter or a malformed token is ignored,
  as if the client had not sent it; a header of nothing but such elements
  means identity.
* ``q=0`` refuses a coding. ``*`` gives its weight to every coding not listed.
  A coding listed twice keeps its lowest weight, so a refusal is never lost.
* ``x-gzip`` is ``gzip`` (RFC 9110 section 8.4.1.3).
* The highest weight wins; among equals, the order of ``available`` (zstd, br,
  gzip) decides, and any accepted coding beats identity of the same weight.
* When nothing is acceptable, even when identity is refused, the body goes out
  uncompressed (identity): a 406 would only break the download.
* Headers over 2048 characters are not parsed (identity).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["IDENTITY", "negotiate", "parse_accept_encoding"]

IDENTITY = "identity"
MAX_HEADER = 2048

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_QVALUE = re.compile(r"q=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_OWS = " \t"
_ALIASES = {"x-gzip": "gzip"}


def parse_accept_encoding(header: str) -> dict[str, float]:
    """The weights the header gives, by lower-case coding (``*`` included)."""
    weights: dict[str, float] = {}
    for element in header.lower().split(","):
        token, *params = (part.strip(_OWS) for part in element.split(";"))
        if not token and not params:
            continue
        if not _TOKEN.fullmatch(token) or len(params) > 1:
            continue
        q = 1.0
        if params:
            match = _QVALUE.fullmatch(params[0])
            if match is None:
                continue
            q = float(match.group(1))
        token = _ALIASES.get(token, token)
        weights[token] = min(q, weights.get(token, q))
    return weights


def negotiate(header: str | None, *, available: Sequence[str]) -> str:
    """The coding to send: one of ``available`` (in order of preference) or identity."""
    if header is None or len(header) > MAX_HEADER:
        return IDENTITY
    return _negotiate(header, tuple(available))


@lru_cache(maxsize=256)
def _negotiate(header: str, available: tuple[str, ...]) -> str:
    # Browsers send a handful of distinct headers, so parsing is cached.
    weights = parse_accept_encoding(header)
    star = weights.get("*")
    best, best_q = IDENTITY, 0.0
    for coding in available:
        q = weights.get(coding, star)
        if q is not None and q > best_q:
            best, best_q = coding, q
    if best == IDENTITY:
        return IDENTITY
    identity_q = weights.get(IDENTITY, star)
    if identity_q is not None and identity_q > best_q:
        return IDENTITY
    return best
