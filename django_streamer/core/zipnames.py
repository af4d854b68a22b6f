"""ZIP member names: what an archive may hold. Plain Python, no Django.

A name is refused when it could escape the folder it is unpacked into (a
``..`` part, an absolute path, a backslash), when it could mislead whoever
reads a listing (control characters, ESC, newlines, bidi overrides and
isolates), when it cannot be written (over 65,535 bytes in UTF-8, which is
what the header's 16-bit field holds; a lone surrogate) or names a folder, and
when it repeats another member's name up to case and Unicode normalisation
(unpacked on a case-insensitive file system, one would overwrite the other).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["MAX_NAME_BYTES", "check_member_name", "check_unique"]

MAX_NAME_BYTES = 0xFFFF
_DRIVE = re.compile(r"^[A-Za-z]:")
# C0 controls (NUL, ESC, newlines...), DEL and the C1 controls; the bidi
# embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def check_member_name(name: object) -> str:
    """``name`` if it is a safe relative path inside an archive; ValueError otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"stream_zip: a member name must be a non-empty str, not {name!r:.80}")
    shown = f"{name!r:.80}"
    if "\\" in name:
        raise ValueError(f"stream_zip: member {shown} has a backslash; use / between folders")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError(f"stream_zip: member {shown} is an absolute path; names are relative")
    if ".." in name.split("/"):
        raise ValueError(f"stream_zip: member {shown} has a '..' part; it could escape")
    if name.endswith("/"):
        raise ValueError(f"stream_zip: member {shown} ends with '/', which names a folder")
    hidden = _HIDDEN.search(name)
    if hidden is not None:
        raise ValueError(
            f"stream_zip: member {shown} has the control or bidi character "
            f"U+{ord(hidden.group()):04X}, which would hide or reorder its name in a listing"
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(
            f"stream_zip: member {shown} is not valid Unicode (a lone surrogate)"
        ) from None
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"stream_zip: member {shown} is {size} bytes long in UTF-8; "
            f"a ZIP name holds at most {MAX_NAME_BYTES}"
        )
    return name


def check_unique(names: Iterable[str]) -> None:
    """ValueError naming both members if two names differ only in case or Unicode form."""
    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name).casefold()
        first = seen.get(key)
        if first is None:
            seen[key] = name
            continue
        if first == name:
            raise ValueError(f"stream_zip: member {name!r:.80} appears twice")
        raise ValueError(
            f"stream_zip: members {first!r:.80} and {name!r:.80} differ only in case or "
            "Unicode form: unpacked on a case-insensitive file system, one would "
            "overwrite the other"
        )
