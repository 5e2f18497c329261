"""Content codings, decoded and encoded again incrementally: gzip, deflate, br, zstd.

A decoder hands on what it decodes in pieces of at most `PIECE` bytes (zstd: about that,
see ZstdDecoder), so that a small, highly compressed read does not
become one huge buffer; the caller rewrites and re-encodes each piece before asking for the
next. An encoder is flushed at the end of every read the rewriter is fed (`flush`: zlib
Z_SYNC_FLUSH, brotli flush, zstd FLUSH_BLOCK) so the client gets the rewritten bytes as they
come instead of when the encoder's buffers fill up.

deflate: RFC 9110 means the zlib format, but some servers send raw deflate; the first two
bytes tell which (as browsers decide), and the body is re-encoded in the same format.
gzip: several members one after another are read as one body (as zlib's gzip tools do).
A body with no bytes at all stays empty. Anything else that does not decode — corrupt data,
a truncated stream, bytes after the end — is a RewriteError.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Protocol

import brotli
import zstandard

from bastion.rewrite.errors import RewriteError

PIECE = 64 * 1024  # most decoded bytes handed on at once
ZSTD_SLICE = 8 * 1024  # most compressed bytes given to the zstd decoder at once
ZSTD_MIN_SLICE = 16  # fewest, when the data compresses extremely well
# Levels for compressing again on the fly, per read: on a 1 MB HTML page (bench/rewrite_cost.py)
# gzip 4 takes 40% of the time of 6 for 18% more bytes, brotli 4 60% of 5 for 13% more.
GZIP_LEVEL = 4
BROTLI_QUALITY = 4
BROTLI_WINDOW = 18  # 256 KiB window: bounded memory per response
ZSTD_LEVEL = 3  # zstd's default

CODINGS = ("gzip", "x-gzip", "deflate", "br", "zstd")


class Decoder(Protocol):
    def decode(self, data: bytes) -> Iterator[bytes]: ...
    def finish(self) -> Iterator[bytes]: ...


class Encoder(Protocol):
    def encode(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...
    def finish(self) -> bytes: ...


def coding_of(content_encoding: bytes | None) -> str | None:
    """The one content coding of a response ("identity" for none), or None when it is
    unknown or several are stacked (`gzip, br`)."""
    names = [
        name.strip().lower()
        for name in (content_encoding or b"").split(b",")
        if name.strip() and name.strip().lower() != b"identity"
    ]
    if not names:
        return "identity"
    if len(names) > 1:
        return None
    name = names[0].decode("ascii", "replace")
    return name if name in CODINGS else None


def codec_pair(coding: str) -> tuple[Decoder, Encoder]:
    """A fresh decoder and encoder for one body in `coding` (from `coding_of`)."""
    if coding in ("gzip", "x-gzip"):
        return ZlibDecoder(16 + zlib.MAX_WBITS, "gzip"), ZlibEncoder(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        decoder = DeflateDecoder()
        return decoder, DeflateEncoder(decoder)
    if coding == "br":
        return BrotliDecoder(), BrotliEncoder()
    if coding == "zstd":
        return ZstdDecoder(), ZstdEncoder()
    return IdentityDecoder(), IdentityEncoder()


class IdentityDecoder:
    """No coding: bytes pass as they are."""

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> Iterator[bytes]:
        return iter(())


class IdentityEncoder:
    def encode(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class ZlibDecoder:
    """gzip (one member after another) or zlib/raw deflate (one stream)."""

    def __init__(self, wbits: int, name: str) -> None:
        self._wbits = wbits
        self._name = name
        self._zlib = zlib.decompressobj(wbits)
        self._seen = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        self._seen = self._seen or bool(data)
        while data:
            if self._zlib.eof:
                self._next_member()
            try:
                piece = self._zlib.decompress(data, PIECE)
            except zlib.error as exc:
                raise RewriteError(f"corrupt {self._name} body: {exc}") from exc
            data = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            if piece:
                yield piece
            while len(piece) == PIECE and not data and not self._zlib.eof:
                piece = self._zlib.decompress(b"", PIECE)  # output still pending
                if piece:
                    yield piece

    def finish(self) -> Iterator[bytes]:
        if self._seen and not self._zlib.eof:
            raise RewriteError(f"truncated {self._name} body")
        return iter(())

    def _next_member(self) -> None:
        if self._name != "gzip":
            raise RewriteError(f"data after the end of the {self._name} body")
        self._zlib = zlib.decompressobj(self._wbits)


class DeflateDecoder:
    """deflate: zlib-wrapped or raw, decided on the first two bytes."""

    def __init__(self) -> None:
        self._head = b""
        self._inner: ZlibDecoder | None = None
        self.raw: bool | None = None  # known once the first two bytes are in

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._inner is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self.raw = not _is_zlib_header(data)
            self._inner = ZlibDecoder(-zlib.MAX_WBITS if self.raw else zlib.MAX_WBITS, "deflate")
        yield from self._inner.decode(data)

    def finish(self) -> Iterator[bytes]:
        if self._head:
            raise RewriteError("truncated deflate body")
        return self._inner.finish() if self._inner is not None else iter(())


def _is_zlib_header(head: bytes) -> bool:
    """RFC 1950: compression method 8, and the two bytes a multiple of 31."""
    return head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


class BrotliDecoder:
    def __init__(self) -> None:
        self._brotli = brotli.Decompressor()
        self._seen = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self._seen = True
        try:
            piece: bytes = self._brotli.process(data, output_buffer_limit=PIECE)
            while True:  # brotli may hold decoded output back until asked again
                if piece:
                    yield piece
                piece = self._brotli.process(b"", output_buffer_limit=PIECE)
                if not piece:
                    break
        except brotli.error as exc:
            raise RewriteError(f"corrupt br body: {exc}") from exc

    def finish(self) -> Iterator[bytes]:
        if self._seen and not self._brotli.is_finished():
            raise RewriteError("truncated br body")
        return iter(())


class ZstdDecoder:
    """zstd: one frame after another, each through its own decompression object.

    zstandard's decompressobj has no output limit, so the input goes in in slices: from
    `ZSTD_MIN_SLICE` bytes, doubled while the output stays under PIECE / 2 (up to
    `ZSTD_SLICE`), cut back when it exceeds PIECE. A piece is then bounded by what one slice
    decodes to: a few 128 KiB blocks for a body that is nothing but zeros, about PIECE for
    ordinary text; only a stream made to defeat this (a large block, then thousands of tiny
    ones) gets more out of one 8 KiB slice.
    """

    def __init__(self) -> None:
        self._zstd = zstandard.ZstdDecompressor().decompressobj()
        self._slice = ZSTD_MIN_SLICE  # grows while the output stays small
        self._seen = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        self._seen = self._seen or bool(data)
        view = memoryview(data)
        while view:
            if self._zstd.eof:
                self._zstd = zstandard.ZstdDecompressor().decompressobj()
            chunk, view = view[: self._slice], view[self._slice :]
            try:
                piece = self._zstd.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise RewriteError(f"corrupt zstd body: {exc}") from exc
            if self._zstd.eof and self._zstd.unused_data:
                view = memoryview(self._zstd.unused_data + bytes(view))
            self._resize(len(chunk), len(piece))
            if piece:
                yield piece

    def finish(self) -> Iterator[bytes]:
        if self._seen and not self._zstd.eof:
            raise RewriteError("truncated zstd body")
        return iter(())

    def _resize(self, given: int, got: int) -> None:
        """Aim the next slice at about PIECE bytes of output."""
        if got > PIECE:
            self._slice = max(ZSTD_MIN_SLICE, given * PIECE // got)
        elif got < PIECE // 2 and given == self._slice:
            self._slice = min(ZSTD_SLICE, self._slice * 2)


class _FlushingEncoder:
    """Keeps track of whether anything was encoded since the last flush."""

    def __init__(self) -> None:
        self._pending = False
        self._started = False

    def encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        self._pending = self._started = True
        return self._compress(data)

    def flush(self) -> bytes:
        if not self._pending:
            return b""
        self._pending = False
        return self._sync()

    def finish(self) -> bytes:
        return self._end() if self._started else b""

    def _compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _sync(self) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        raise NotImplementedError


class ZlibEncoder(_FlushingEncoder):
    def __init__(self, wbits: int) -> None:
        super().__init__()
        self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, wbits)

    def _compress(self, data: bytes) -> bytes:
        return self._zlib.compress(data)

    def _sync(self) -> bytes:
        return self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def _end(self) -> bytes:
        return self._zlib.flush(zlib.Z_FINISH)


class DeflateEncoder(ZlibEncoder):
    """deflate in the format the origin used (zlib unless its body was raw)."""

    def __init__(self, decoder: DeflateDecoder) -> None:
        self._decoder = decoder
        self._made = False
        super().__init__(zlib.MAX_WBITS)

    def _compress(self, data: bytes) -> bytes:
        if not self._made:
            self._made = True
            if self._decoder.raw:
                self._zlib = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        return super()._compress(data)


class BrotliEncoder(_FlushingEncoder):
    def __init__(self) -> None:
        super().__init__()
        self._brotli = brotli.Compressor(
            mode=brotli.MODE_TEXT, quality=BROTLI_QUALITY, lgwin=BROTLI_WINDOW
        )

    def _compress(self, data: bytes) -> bytes:
        out: bytes = self._brotli.process(data)
        return out

    def _sync(self) -> bytes:
        out: bytes = self._brotli.flush()
        return out

    def _end(self) -> bytes:
        out: bytes = self._brotli.finish()
        return out


class ZstdEncoder(_FlushingEncoder):
    def __init__(self) -> None:
        super().__init__()
        self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

    def _compress(self, data: bytes) -> bytes:
        return self._zstd.compress(data)

    def _sync(self) -> bytes:
        return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def _end(self) -> bytes:
        return self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
