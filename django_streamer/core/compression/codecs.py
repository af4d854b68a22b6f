"""Streaming encoders for the zstd, br and gzip content codings. Plain Python, no Django.

Every encoder has the same three calls: ``compress(data)`` (may hold bytes
back), ``flush()`` (a sync flush: every byte given so far becomes decodable by
the client) and ``finish()`` (ends the stream: gzip trailer, brotli last
block, zstd end of frame). An encoder that is never finished leaves the client
with a stream its decoder reports as truncated, which is what a failed source
must look like.

BREACH: like Django's GZipMiddleware (4.2+), each stream carries 0 to
``max_padding - 1`` random bytes that do not change the decoded body, so the
length of a response no longer follows its content byte for byte:

* gzip: a random-length file name in the header (exactly Django's scheme);
* br: a metadata meta-block (RFC 7932 section 9.2, skipped by every decoder)
  right after the stream header, which an empty flush ends on a byte boundary;
* zstd: a skippable frame (RFC 8878 section 3.1.2) before the data frame.

Levels are chosen for streaming; ``bench/levels.py`` measures them and the
README's *Compression* section has the table.
"""

from __future__ import annotations

import importlib
import secrets
import struct
import zlib
from functools import cache
from typing import Any, Protocol

__all__ = [
    "CODINGS",
    "LEVELS",
    "Encoder",
    "available_codings",
    "make_encoder",
    "zstd_backend",
]

# Preference among codings the client accepts equally, best first.
CODINGS = ("zstd", "br", "gzip")

# zstd 3 and br 4 are where both still run at several times gzip 6's speed
# with a better ratio (Cloudflare's choices too); gzip 6 is Django's level.
LEVELS = {"zstd": 3, "br": 4, "gzip": 6}

# Django's GZipMiddleware.max_random_bytes.
MAX_PADDING = 100

_ZSTD_MODULES = ("compression.zstd", "backports.zstd", "zstandard")


class Encoder(Protocol):
    coding: str

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def finish(self) -> bytes: ...


@cache
def zstd_backend() -> str | None:
    """The module that provides zstd here, or None.

    ``compression.zstd`` (Python 3.14+) and its backport share one API;
    ``zstandard`` has its own.
    """
    for name in _ZSTD_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return None


@cache
def available_codings() -> tuple[str, ...]:
    """The codings this process can produce, in order of preference."""
    found = []
    if zstd_backend() is not None:
        found.append("zstd")
    try:
        importlib.import_module("brotli")
        found.append("br")
    except ImportError:
        pass
    found.append("gzip")
    return tuple(found)


def make_encoder(
    coding: str, *, level: int | None = None, max_padding: int = MAX_PADDING
) -> Encoder:
    """A fresh encoder for ``coding`` ("zstd", "br" or "gzip").

    ``max_padding=0`` turns the BREACH padding off (tests comparing sizes).
    """
    if level is None:
        level = LEVELS.get(coding, 0)
    pad = secrets.randbelow(max_padding) if max_padding > 0 else 0
    if coding == "gzip":
        return GzipEncoder(level=level, padding=pad)
    if coding == "br":
        return BrotliEncoder(level=level, padding=pad)
    if coding == "zstd":
        return ZstdEncoder(level=level, padding=pad)
    raise ValueError(f"unknown content coding {coding!r}; expected one of {', '.join(CODINGS)}")


class _Padded:
    """Puts the padding (and any stream header) in front of the first output."""

    coding = ""

    def __init__(self, head: bytes) -> None:
        self._head = head

    def _out(self, data: bytes) -> bytes:
        if self._head:
            data, self._head = self._head + data, b""
        return data


class GzipEncoder(_Padded):
    """Raw deflate between a gzip header and trailer that we write ourselves.

    Writing the header is what lets it carry a random-length file name; zlib's
    own gzip mode (``wbits=31``) cannot.
    """

    coding = "gzip"

    def __init__(self, *, level: int, padding: int) -> None:
        flags = 0x08 if padding else 0  # FNAME
        # magic, deflate, flags, mtime 0, no extra flags, OS unknown (255)
        head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
        if padding:
            head += b"a" * padding + b"\0"
        super().__init__(head)
        self._z = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        return self._out(self._z.compress(data))

    def flush(self) -> bytes:
        return self._out(self._z.flush(zlib.Z_SYNC_FLUSH))

    def finish(self) -> bytes:
        trailer = struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
        return self._out(self._z.flush(zlib.Z_FINISH) + trailer)


def brotli_metadata(size: int) -> bytes:
    """A brotli metadata meta-block holding ``size`` (1-256) bytes, from a byte boundary.

    Bits, least significant first: ISLAST=0, MNIBBLES=0 (coded 3), reserved 0,
    MSKIPBYTES=1, then MSKIPLEN-1 in 8 bits; the 14 bits pad to 2 bytes.
    """
    if not 1 <= size <= 256:
        raise ValueError(f"brotli metadata size must be 1-256, not {size}")
    bits = (3 << 1) | (1 << 4) | ((size - 1) << 6)
    return struct.pack("<H", bits) + b"a" * size


class BrotliEncoder(_Padded):
    coding = "br"

    def __init__(self, *, level: int, padding: int) -> None:
        import brotli

        self._c: Any = brotli.Compressor(quality=level)
        # An empty flush emits the stream header and ends on a byte boundary,
        # where a metadata meta-block may begin.
        head = self._c.flush() + brotli_metadata(padding) if padding else b""
        super().__init__(head)

    def compress(self, data: bytes) -> bytes:
        return self._out(self._c.process(data))

    def flush(self) -> bytes:
        return self._out(self._c.flush())

    def finish(self) -> bytes:
        return self._out(self._c.finish())


def zstd_skippable_frame(size: int) -> bytes:
    """A zstd skippable frame with ``size`` bytes of content; decoders skip it."""
    return struct.pack("<II", 0x184D2A50, size) + b"a" * size


class ZstdEncoder(_Padded):
    coding = "zstd"

    def __init__(self, *, level: int, padding: int, backend: str | None = None) -> None:
        super().__init__(zstd_skippable_frame(padding) if padding else b"")
        backend = backend or zstd_backend()
        if backend is None:
            raise RuntimeError(
                "zstd needs Python 3.14+ or: pip install 'django-streamer[compression]'"
            )
        module: Any = importlib.import_module(backend)
        if backend == "zstandard":
            self._c = module.ZstdCompressor(level=level).compressobj()
            self._block = module.COMPRESSOBJ_FLUSH_BLOCK
            self._end: tuple[Any, ...] = ()
        else:
            self._c = module.ZstdCompressor(level=level)
            self._block = module.ZstdCompressor.FLUSH_BLOCK
            self._end = (module.ZstdCompressor.FLUSH_FRAME,)

    def compress(self, data: bytes) -> bytes:
        return self._out(self._c.compress(data))

    def flush(self) -> bytes:
        return self._out(self._c.flush(self._block))

    def finish(self) -> bytes:
        return self._out(self._c.flush(*self._end))
