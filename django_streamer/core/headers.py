"""Header helpers that need no framework."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# RFC 9110 section 7.6.1 plus the ones WSGI (PEP 3333) forbids an app to set.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def content_disposition(filename: str, *, attachment: bool = True) -> str:
    """An RFC 6266 ``Content-Disposition`` value safe for any Unicode name.

    Control characters (CR and LF included, so no header injection) and path
    separators become ``_``. ``filename`` carries an ASCII fallback for old
    clients; ``filename*`` carries the exact name, percent-encoded UTF-8.
    """
    if not isinstance(filename, str) or not filename.strip():
        raise ValueError(f"filename must be a non-empty str, got {filename!r}")
    clean = _UNSAFE.sub("_", filename)
    fallback = unicodedata.normalize("NFKD", clean).encode("ascii", "ignore").decode("ascii")
    fallback = fallback.replace("\\", "_").replace('"', "'").strip() or "download"
    kind = "attachment" if attachment else "inline"
    encoded = quote(clean, safe="")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def check_headers(headers: dict[str, str], *, name: str) -> None:
    for header in headers:
        if header.lower() in HOP_BY_HOP:
            raise ValueError(
                f"stream {name!r}: {header!r} is a hop-by-hop header; the server sets "
                "framing headers itself, so a stream must not"
            )
