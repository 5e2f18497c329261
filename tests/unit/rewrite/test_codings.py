"""Content codings decoded and encoded incrementally (bastion.rewrite.codings)."""

from __future__ import annotations

import gzip
import os
import zlib

import brotli
import pytest
import zstandard

from bastion.rewrite.codings import PIECE, Decoder, Encoder, codec_pair, coding_of
from bastion.rewrite.errors import RewriteError

TEXT = b"<p>hello, world</p>\n" * 5000 + os.urandom(3000)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def unzstd(data: bytes) -> bytes:
    out, view = [], data
    while view:  # one frame after another
        decoder = zstandard.ZstdDecompressor().decompressobj()
        out.append(decoder.decompress(view))
        view = decoder.unused_data
    return b"".join(out)


COMPRESS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd,
}
DECOMPRESS = {
    "gzip": gzip.decompress,
    "x-gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "br": brotli.decompress,
    "zstd": unzstd,
}


def decode_all(decoder: Decoder, data: bytes, read: int = 1000) -> list[bytes]:
    pieces: list[bytes] = []
    for at in range(0, len(data), read):
        pieces += decoder.decode(data[at : at + read])
    pieces += decoder.finish()
    return pieces


def encode_all(encoder: Encoder, pieces: list[bytes]) -> bytes:
    return b"".join(encoder.encode(p) + encoder.flush() for p in pieces) + encoder.finish()


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, "identity"),
        (b"", "identity"),
        (b"identity", "identity"),
        (b"gzip", "gzip"),
        (b" GZip ", "gzip"),
        (b"x-gzip", "x-gzip"),
        (b"deflate", "deflate"),
        (b"br", "br"),
        (b"zstd", "zstd"),
        (b"identity, gzip", "gzip"),
        (b"gzip, br", None),  # stacked: not undone
        (b"gzip,gzip", None),
        (b"compress", None),
        (b"exi", None),
        (b"aes128gcm", None),
    ],
)
def test_coding_of(header: bytes | None, coding: str | None) -> None:
    assert coding_of(header) == coding


@pytest.mark.parametrize("coding", sorted(COMPRESS))
@pytest.mark.parametrize("read", [1, 7, 1000, 1 << 20])
def test_round_trip(coding: str, read: int) -> None:
    decoder, encoder = codec_pair(coding)
    pieces = decode_all(decoder, COMPRESS[coding](TEXT), read)
    assert b"".join(pieces) == TEXT
    assert DECOMPRESS[coding](encode_all(encoder, pieces)) == TEXT


def test_raw_deflate_stays_raw() -> None:
    decoder, encoder = codec_pair("deflate")
    pieces = decode_all(decoder, raw_deflate(TEXT), 1)
    assert b"".join(pieces) == TEXT
    assert zlib.decompress(encode_all(encoder, pieces), -zlib.MAX_WBITS) == TEXT


def test_gzip_members_one_after_another() -> None:
    decoder, _ = codec_pair("gzip")
    assert b"".join(decode_all(decoder, gzip.compress(b"one ") + gzip.compress(b"two"), 5)) == (
        b"one two"
    )


def test_zstd_frames_one_after_another() -> None:
    decoder, _ = codec_pair("zstd")
    assert b"".join(decode_all(decoder, zstd(b"one ") + zstd(b"two"), 3)) == b"one two"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_pieces_are_bounded(coding: str) -> None:
    """A small, highly compressed read is handed on in pieces, not as one huge buffer."""
    fast = {"br": lambda d: brotli.compress(d, quality=1), "gzip": lambda d: gzip.compress(d, 1)}
    bomb = fast.get(coding, COMPRESS[coding])(b"\0" * (20 << 20))
    decoder, _ = codec_pair(coding)
    total = 0
    for piece in decoder.decode(bomb):
        assert len(piece) <= (2 << 20 if coding == "zstd" else 2 * PIECE)
        total += len(piece)
    list(decoder.finish())
    assert total == 20 << 20


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_truncated(coding: str) -> None:
    data = COMPRESS[coding](TEXT)
    decoder, _ = codec_pair(coding)
    list(decoder.decode(data[: len(data) // 2]))
    with pytest.raises(RewriteError, match="truncated"):
        list(decoder.finish())


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt(coding: str) -> None:
    data = bytearray(COMPRESS[coding](TEXT))
    for at in range(2, len(data), 97):
        data[at] ^= 0x55
    decoder, _ = codec_pair(coding)
    with pytest.raises(RewriteError):
        decode_all(decoder, bytes(data))


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_not_compressed_at_all(coding: str) -> None:
    decoder, _ = codec_pair(coding)
    with pytest.raises(RewriteError):
        decode_all(decoder, b"<html>this was never compressed</html>" * 10)


@pytest.mark.parametrize(
    ("coding", "trailer"),
    [("gzip", b"garbage"), ("deflate", b"x"), ("br", b"x"), ("zstd", b"xyz!")],
)
def test_bytes_after_the_end(coding: str, trailer: bytes) -> None:
    decoder, _ = codec_pair(coding)
    with pytest.raises(RewriteError):
        decode_all(decoder, COMPRESS[coding](b"body") + trailer)


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_empty_body_stays_empty(coding: str) -> None:
    decoder, encoder = codec_pair(coding)
    assert decode_all(decoder, b"") == []
    assert encode_all(encoder, []) == b""


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_flush_makes_what_was_encoded_decodable(coding: str) -> None:
    """After each flush the client can decode everything encoded so far."""
    _, encoder = codec_pair(coding)
    if coding == "br":
        client = brotli.Decompressor()

        def decode(data: bytes) -> bytes:  # brotli's process may keep output for later calls
            out: bytes = client.process(data)
            piece = out
            while piece:
                piece = client.process(b"")
                out += piece
            return out

    elif coding == "zstd":
        decode = zstandard.ZstdDecompressor().decompressobj().decompress
    else:
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if coding == "gzip" else 15)

        def decode(data: bytes) -> bytes:
            return decoder.decompress(data)

    sent = b""
    for n in range(5):
        chunk = b"chunk %d " % n * 50
        decoded = decode(encoder.encode(chunk) + encoder.flush())
        assert decoded == chunk
        sent += chunk
    assert encoder.flush() == b""  # nothing new: no empty flush block
