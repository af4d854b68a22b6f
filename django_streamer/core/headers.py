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
# Bidirectional overrides and isolates: "invoice\u202etxt.exe" shows as
# "invoiceexe.txt". Removed, not replaced.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What common filesystems allow for one name (ext4, APFS, NTFS: 255 units);
# it keeps the header near 1 KB however long the name given.
MAX_FILENAME_BYTES = 255
_MAX_EXTENSION_BYTES = 16  # a longer "extension" is part of the name


def content_disposition(filename: str, *, attachment: bool = True) -> str:
    """An RFC 6266 ``Content-Disposition`` value safe for any Unicode name.

    Control characters (CR and LF included, so no header injection) and path
    separators become ``_``; bidi controls are removed; a name over
    ``MAX_FILENAME_BYTES`` of UTF-8 is shortened, keeping its extension.
    ``filename`` carries an ASCII fallback for old clients; ``filename*``
    carries the exact name, percent-encoded UTF-8.
    """
    if not isinstance(filename, str):
        raise ValueError(f"filename must be a str, got {type(filename).__name__} {filename!r}")
    clean = _BIDI.sub("", filename).strip()
    if not clean:
        raise ValueError(f"filename is blank: {filename!r}; give a name, or leave filename out")
    clean = cap_filename(_UNSAFE.sub("_", clean))
    fallback = unicodedata.normalize("NFKD", clean).encode("ascii", "ignore").decode("ascii")
    fallback = fallback.replace("\\", "_").replace('"', "'").strip() or "download"
    kind = "attachment" if attachment else "inline"
    encoded = quote(clean, safe="")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def cap_filename(name: str, limit: int = MAX_FILENAME_BYTES) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8 (never inside a character), extension kept."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension
    if not stem or len(suffix.encode()) > _MAX_EXTENSION_BYTES:
        stem, suffix = name, ""
    budget = limit - len(suffix.encode())
    return stem.encode()[:budget].decode("utf-8", "ignore") + suffix


def check_headers(headers: dict[str, str], *, name: str) -> None:
    for header in headers:
        if header.lower() in HOP_BY_HOP:
            raise ValueError(
                f"stream {name!r}: {header!r} is a hop-by-hop header; the server sets "
                "framing headers itself, so a stream must not"
            )
