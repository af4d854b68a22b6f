"""Real streaming decoders for the three codings, fed the way a client is: piece by piece."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import brotli
import zstandard


def is_skippable(magic: bytes) -> bool:
    """Skippable frames have magic numbers 0x184D2A50 to 0x184D2A5F (little-endian)."""
    return len(magic) == 4 and struct.unpack("<I", magic)[0] & ~0xF == 0x184D2A50


class Decoder:
    """``feed(bytes) -> bytes`` and ``complete``: did the stream end well-formed?"""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._obj: Any
        if coding == "gzip":
            self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "br":
            self._obj = brotli.Decompressor()
        else:
            self._obj = _ZstdFrames()

    def feed(self, data: bytes) -> bytes:
        if self.coding != "br":
            out: bytes = self._obj.decompress(data)
            return out
        # brotli 1.2's process() hands out about 32 KiB of a stream that has not
        # ended and keeps the rest until called again (with no input).
        pieces = [self._obj.process(data)]
        while pieces[-1]:
            pieces.append(self._obj.process(b""))
        return b"".join(pieces)

    @property
    def complete(self) -> bool:
        if self.coding == "br":
            return bool(self._obj.is_finished())
        return bool(self._obj.eof)


class _ZstdFrames:
    """zstandard's decompressobj, one per frame, as libzstd's streaming API reads.

    Our BREACH padding is a skippable frame before the data frame; curl and the
    browsers (libzstd's ``ZSTD_decompressStream``) skip it and read on, while
    zstandard's decompressobj stops at the end of any frame. ``eof`` is true
    when the last frame was a data frame and it ended.
    """

    def __init__(self) -> None:
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._magic = b""
        self._data_frame_ended = False

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._obj.eof:
                self._obj = zstandard.ZstdDecompressor().decompressobj()
                self._magic = b""
                self._data_frame_ended = False
            self._magic += data[: 4 - len(self._magic)]
            out.append(self._obj.decompress(data))
            data = self._obj.unused_data if self._obj.eof else b""
            if self._obj.eof and not is_skippable(self._magic):
                self._data_frame_ended = True
        return b"".join(out)

    @property
    def eof(self) -> bool:
        return self._obj.eof and self._data_frame_ended


def decode(coding: str, data: bytes) -> bytes:
    """Decode a whole body, requiring it to be complete."""
    dec = Decoder(coding)
    out = dec.feed(data)
    assert dec.complete, f"{coding} stream is not complete"
    return out


def byteranges(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """A ``multipart/byteranges`` body parsed by the ``email`` package: (type, range, data)."""
    from email import message_from_bytes
    from email.message import Message

    message = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    assert message.is_multipart(), content_type
    parts: list[Message] = message.get_payload()  # type: ignore[assignment]
    found = []
    for part in parts:
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        found.append((part["Content-Type"], part["Content-Range"], data))
    return found
