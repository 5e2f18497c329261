"""Streaming body rewrite end to end: type and coding choice, compressed bodies, charsets,
streaming, bounded memory (bastion.rewrite.body)."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.rewrite import BodyRewriter, Origin, RewriteError, UrlMap, body_rewriter
from bastion.rewrite.patterns import LOOKBEHIND, Mode
from bastion.rewrite.scanner import Scanner

INTERNAL = [Origin.parse("http://10.0.0.5:8080"), Origin.parse("http://app")]
PUB = b"https://www.example.com"
MAP = UrlMap(INTERNAL, b"https", b"www.example.com", b"/legacy")
BOUND = MAP.grammar.reach + LOOKBEHIND + 4  # scanner tail + BOM sniffing

ITEM = (
    b'<li><a href="http://10.0.0.5:8080/item/%d">item</a> <a href="/item/%d?x">same</a>'
    b' <img src="//app/i/%d.png" srcset="/i/%d.png 1x, /i/%d@2x.png 2x">'
    b"<script>var u = 'http:\\/\\/app\\/api\\/%d';</script></li>\n"
)
PAGE = (
    b"<!DOCTYPE html><html><head><style>body{background:url(/bg.png)}</style></head><body>\n"
    + b"".join(ITEM % ((n,) * 6) for n in range(200))
    + b"</body></html>\n"
)


def one_shot(text: bytes, mode: Mode = Mode.HTML) -> bytes:
    scanner = Scanner(MAP, mode)
    return scanner.feed(text) + scanner.end()


EXPECTED = one_shot(PAGE)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def unzstd(data: bytes) -> bytes:
    out, rest = [], data
    while rest:
        decoder = zstandard.ZstdDecompressor().decompressobj()
        out.append(decoder.decompress(rest))
        rest = decoder.unused_data
    return b"".join(out)


# name: (Content-Encoding, compress, decompress)
CODINGS: dict[str, tuple[bytes | None, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "identity": (None, bytes, bytes),
    "gzip": (b"gzip", gzip.compress, gzip.decompress),
    "deflate": (b"deflate", zlib.compress, zlib.decompress),
    "deflate-raw": (b"deflate", raw_deflate, lambda d: zlib.decompress(d, -zlib.MAX_WBITS)),
    "br": (b"br", brotli.compress, brotli.decompress),
    "zstd": (b"zstd", zstandard.ZstdCompressor().compress, unzstd),
}


FAST_COMPRESS = {
    "gzip": lambda d: gzip.compress(d, compresslevel=1),
    "br": lambda d: brotli.compress(d, quality=1),
    "zstd": zstandard.ZstdCompressor(level=1).compress,
}


def new_rewriter(
    coding: str = "identity", content_type: bytes = b"text/html; charset=utf-8"
) -> BodyRewriter:
    rewriter = body_rewriter(MAP, content_type, CODINGS[coding][0])
    assert rewriter is not None
    return rewriter


def feed_cut(rewriter: BodyRewriter, data: bytes, cuts: list[int]) -> bytes:
    out, last = [], 0
    for cut in [*sorted(cuts), len(data)]:
        out.append(rewriter.feed(data[last:cut]))
        last = cut
    return b"".join(out) + rewriter.end()


# --- which bodies are rewritten ------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        b"text/html",
        b"TEXT/HTML; charset=UTF-8",
        b'text/html;charset="iso-8859-1"',
        b"application/xhtml+xml",
        b"text/css",
        b"text/javascript",
        b"application/javascript",
        b"application/x-javascript",
        b"application/json",
        b"application/ld+json",
        b"application/problem+json",
        b"text/xml",
        b"application/xml",
        b"application/atom+xml",
        b"image/svg+xml",
        b"text/html; charset=utf-16",
        b"text/html; charset=shift_jis",
    ],
)
def test_rewritten_types(content_type: bytes) -> None:
    assert body_rewriter(MAP, content_type, None) is not None


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        b"",
        b"text/plain",
        b"image/png",
        b"application/octet-stream",
        b"font/woff2",
        b"application/pdf",
        b"multipart/form-data; boundary=x",
        b"text/html; charset=x-unknown",
        b"text/html; charset=utf-7",
    ],
)
def test_untouched_types(content_type: bytes | None) -> None:
    assert body_rewriter(MAP, content_type, None) is None


@pytest.mark.parametrize("coding", [b"gzip, br", b"br, gzip", b"compress", b"exi", b"x-custom"])
def test_untouched_codings(coding: bytes) -> None:
    assert body_rewriter(MAP, b"text/html", coding) is None


def test_identity_coding_is_plain() -> None:
    rewriter = body_rewriter(MAP, b"text/html", b"identity")
    assert rewriter is not None
    assert rewriter.feed(PAGE) + rewriter.end() == EXPECTED


@pytest.mark.parametrize(
    ("content_type", "mode"),
    [(b"text/css", Mode.CSS), (b"application/json", Mode.PLAIN), (b"text/html", Mode.HTML)],
)
def test_type_picks_the_rules(content_type: bytes, mode: Mode) -> None:
    body = b'<a href="/x"> url(/y) "http://app/z"'
    rewriter = body_rewriter(MAP, content_type, None)
    assert rewriter is not None
    assert rewriter.feed(body) + rewriter.end() == one_shot(body, mode)


# --- compressed bodies ------------------------------------------------------------------


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_each_coding_decoded_rewritten_encoded_again(coding: str) -> None:
    _, compress, decompress = CODINGS[coding]
    out = feed_cut(new_rewriter(coding), compress(PAGE), [])
    assert decompress(out) == EXPECTED
    assert PUB + b"/legacy/item/7" in EXPECTED and b'"/legacy/item/7?x"' in EXPECTED


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(sorted(CODINGS)))
def test_any_cuts_same_body(data: st.DataObject, coding: str) -> None:
    _, compress, decompress = CODINGS[coding]
    body = compress(PAGE)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    assert decompress(feed_cut(new_rewriter(coding), body, cuts)) == EXPECTED


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_empty_body_stays_empty(coding: str) -> None:
    rewriter = new_rewriter(coding)
    assert rewriter.feed(b"") + rewriter.end() == b""


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt_body(coding: str) -> None:
    body = bytearray(CODINGS[coding][1](PAGE))
    for at in range(3, len(body), 101):
        body[at] ^= 0xA5
    with pytest.raises(RewriteError) as raised:
        feed_cut(new_rewriter(coding), bytes(body), [len(body) // 3])
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_body(coding: str) -> None:
    body = CODINGS[coding][1](PAGE)
    rewriter = new_rewriter(coding)
    rewriter.feed(body[: len(body) - 10])
    with pytest.raises(RewriteError, match="truncated"):
        rewriter.end()


# --- streaming ------------------------------------------------------------------------------


def client_decoder(coding: str) -> Callable[[bytes], bytes]:
    """What a client does with the bytes as they arrive."""
    if coding == "identity":
        return bytes
    if coding == "br":
        decoder = brotli.Decompressor()

        def drain(data: bytes) -> bytes:  # brotli's process may keep output for later calls
            out: bytes = decoder.process(data)
            piece = out
            while piece:
                piece = decoder.process(b"")
                out += piece
            return out

        return drain
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(coding, -zlib.MAX_WBITS)
    return zlib.decompressobj(wbits).decompress


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_every_read_comes_out_at_once(coding: str) -> None:
    """After each read, flushed, the client can decode everything the origin's bytes so far
    decode to (rewritten), but for the bounded tail the scanner holds back."""
    _, compress, _ = CODINGS[coding]
    body = compress(PAGE * 8)
    expected = EXPECTED * 8
    read = max(len(body) // 40, 64)
    rewriter, client, origin_side = (
        new_rewriter(coding),
        client_decoder(coding),
        client_decoder(coding),
    )
    seen = decoded_in = b""
    for at in range(0, len(body), read):
        chunk = body[at : at + read]
        decoded_in += origin_side(chunk)
        seen += client(rewriter.feed(chunk))
        assert expected.startswith(seen)
        assert len(seen) >= len(decoded_in) - BOUND, at
    assert len(seen) < len(expected)  # the tail is still held back ...
    seen += client(rewriter.end())
    assert seen == expected  # ... until the end


def test_first_byte_out_before_last_byte_in() -> None:
    rewriter = new_rewriter()
    assert rewriter.feed(PAGE[:-10])  # all but the last 10 bytes in: output already
    assert rewriter.buffered <= BOUND


# --- bounded memory -----------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["identity", "gzip"])
def test_50_megabytes_in_64k_reads_hold_a_bounded_tail(coding: str) -> None:
    filler = b"<p>" + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + b"</p>\n"
    page = b"".join(item + filler for item in PAGE.splitlines(keepends=True)) * 2  # ~780 KB
    copies = (50 << 20) // len(page)
    compressed = CODINGS[coding][1](page)
    body = compressed * copies  # gzip: one member per copy
    rewriter = new_rewriter(coding)
    decompress = CODINGS[coding][2]
    out_hash, out_len, largest = hashlib.sha256(), 0, 0
    client = client_decoder(coding)
    for at in range(0, len(body), 64 * 1024):
        out = client(rewriter.feed(body[at : at + 64 * 1024]))
        assert rewriter.buffered <= BOUND
        largest = max(largest, len(out))
        out_hash.update(out)
        out_len += len(out)
    out = client(rewriter.end())
    out_hash.update(out)
    expected = one_shot(page)
    assert out_len + len(out) == len(expected) * copies
    assert out_hash.digest() == hashlib.sha256(expected * copies).digest()
    assert decompress(compressed) == page


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_compression_bomb_is_rewritten_in_bounded_memory(coding: str) -> None:
    """64 MB that compress to some KB, fed in one read: decoded, rewritten and encoded
    piece by piece, never held whole."""
    text = b'<a href="/x">' + b" " * (64 << 20) + b'<a href="http://app/y">'
    body = FAST_COMPRESS[coding](text)
    rewriter = new_rewriter(coding)
    tracemalloc.start()
    try:
        out = rewriter.feed(body) + rewriter.end()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    rewritten = CODINGS[coding][2](out)
    assert rewritten.startswith(b'<a href="/legacy/x">')
    assert rewritten.endswith(b'<a href="' + PUB + b'/legacy/y">')


# --- charsets -----------------------------------------------------------------------------

TEXT = "<p>日本語のページ — ünïcödé</p>" + PAGE.decode()
CJK = {"big5": "<p>中文網頁</p>", "gb18030": "<p>中文网页 — ünïcödé</p>"}


@pytest.mark.parametrize(
    ("charset", "codec"),
    [
        (b"utf-16", "utf-16"),  # with a BOM (Python writes one, little-endian)
        (b"utf-16le", "utf-16-le"),
        (b"utf-16be", "utf-16-be"),
        (b"utf-32", "utf-32"),
        (b"shift_jis", "shift_jis"),
        (b"euc-jp", "euc-jp"),
        (b"iso-2022-jp", "iso2022_jp"),
        (b"gb18030", "gb18030"),
        (b"big5", "big5"),
        (b"utf-8", "utf-8"),
    ],
)
def test_charsets(charset: bytes, codec: str) -> None:
    text = CJK.get(codec, "<p>日本語のページ</p>") + PAGE.decode()
    body = text.encode(codec)
    rewriter = new_rewriter(content_type=b"text/html; charset=" + charset)
    out = feed_cut(rewriter, body, [1, 3, len(body) // 2 + 1])
    assert out.decode(codec) == one_shot(text.encode()).decode()
    assert out != body


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_utf16_any_cuts(data: st.DataObject) -> None:
    body = TEXT.encode("utf-16")
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    rewriter = new_rewriter(content_type=b"text/html; charset=utf-16")
    assert feed_cut(rewriter, body, cuts) == one_shot(TEXT.encode()).decode().encode("utf-16")


@pytest.mark.parametrize("declared", [b"", b"; charset=utf-8", b"; charset=iso-8859-1"])
def test_byte_order_mark_wins(declared: bytes) -> None:
    body = TEXT.encode("utf-16-le")
    rewriter = new_rewriter(content_type=b"text/html" + declared)
    out = feed_cut(rewriter, b"\xff\xfe" + body, [1])
    assert out == b"\xff\xfe" + one_shot(TEXT.encode()).decode().encode("utf-16-le")


def test_undecodable_bytes_survive_a_transcoded_charset() -> None:
    body = "<p>日本</p>".encode("shift_jis") + b"\xff\xfd\x80" + b'<a href="http://app/x">'
    rewriter = new_rewriter(content_type=b"text/html; charset=shift_jis")
    out = feed_cut(rewriter, body, [9, 10])
    assert out == body.replace(b"http://app/x", PUB + b"/legacy/x")


def test_invalid_utf16_is_an_error() -> None:
    rewriter = new_rewriter(content_type=b"text/html; charset=utf-16le")
    rewriter.feed("<p>x</p>".encode("utf-16-le") + b"<")  # half a code unit at the end
    with pytest.raises(RewriteError, match="utf-16"):
        rewriter.end()


def test_invalid_utf32_is_an_error() -> None:
    rewriter = new_rewriter(content_type=b"text/html; charset=utf-32le")
    with pytest.raises(RewriteError, match="utf-32"):
        rewriter.feed(b"\xff\xff\xff\xff" * 4)


def test_latin1_bytes_pass_unchanged() -> None:
    body = "<p>café</p><a href='/x'>".encode("latin-1")
    rewriter = new_rewriter(content_type=b"text/html; charset=iso-8859-1")
    assert rewriter.feed(body) + rewriter.end() == b"<p>caf\xe9</p><a href='/legacy/x'>"


@pytest.mark.parametrize("codec", ["utf-16", "iso2022_jp", "shift_jis"])
def test_transcoded_bodies_hold_a_bounded_tail(codec: str) -> None:
    body = ("<p>日本語</p>" + PAGE.decode()).encode(codec) * 20
    rewriter = new_rewriter(content_type=b"text/html; charset=" + codec.encode())
    out = []
    for at in range(0, len(body), 64 * 1024):
        out.append(rewriter.feed(body[at : at + 64 * 1024]))
        assert out[-1]
        assert rewriter.buffered <= BOUND + 8
    out.append(rewriter.end())
    assert b"".join(out).decode(codec).count("/legacy/item/") == 200 * 20 * 2
