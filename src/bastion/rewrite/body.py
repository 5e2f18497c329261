"""Streaming rewrite of a response body: content coding off, charset read, URLs rewritten,
charset and content coding back on — one read at a time, in bounded memory.

    rewriter = body_rewriter(url_map, content_type, content_encoding)
    if rewriter is not None:
        for read in reads: send(rewriter.feed(read))
        send(rewriter.end())

Which types are rewritten, by Content-Type (parameters other than charset ignored):
HTML (text/html, application/xhtml+xml): absolute internal URLs everywhere, and under a
prefix root-relative URLs in URL attributes, srcset, meta refresh, `<style>` and style=""
(patterns.py). CSS (text/css): absolute URLs, and under a prefix `url()` and `@import`.
JavaScript, JSON, XML (text/javascript, application/javascript, application/json, *+json,
text/xml, application/xml, *+xml — SVG, Atom, RSS among them): absolute URLs only (in JSON
also `http:\\/\\/host` and `\\/\\/host`). Any other type, a response with no Content-Type,
an unknown charset, an unknown or stacked content coding: None, the body passes untouched.

Memory per body: the scanner's held-back tail (`Grammar.reach` + a few bytes, about 2.5 KB
for one short authority), a few bytes of BOM sniffing and charset decoding state, one decoded
piece (codings.PIECE) at a time, and the compression libraries' own windows. `feed` returns
everything that could be rewritten so far (all but that tail), encoded and flushed.
"""

from __future__ import annotations

from bastion.rewrite.charset import Charset, CharsetReader, charset_of
from bastion.rewrite.codings import Decoder, Encoder, codec_pair, coding_of
from bastion.rewrite.patterns import Mode
from bastion.rewrite.scanner import Scanner
from bastion.rewrite.urls import UrlMap

_HTML = frozenset({b"text/html", b"application/xhtml+xml"})
_CSS = frozenset({b"text/css"})
_PLAIN = frozenset(
    {b"text/javascript", b"application/javascript", b"application/x-javascript"}
    | {b"application/ecmascript", b"text/ecmascript", b"application/json", b"text/json"}
    | {b"text/xml", b"application/xml"}
)


class BodyRewriter:
    """Rewrites one response body as it streams (a `BodyTransform`)."""

    __slots__ = ("_decoder", "_encoder", "_text")

    def __init__(self, url_map: UrlMap, mode: Mode, charset: Charset, coding: str) -> None:
        self._decoder: Decoder
        self._encoder: Encoder
        self._decoder, self._encoder = codec_pair(coding)
        self._text = CharsetReader(charset, lambda: Scanner(url_map, mode))

    @property
    def buffered(self) -> int:
        """Text bytes held back between reads (bounded; see the module docstring)."""
        return self._text.buffered

    def feed(self, data: bytes) -> bytes:
        """Rewrite one read; returns what can be sent now (maybe nothing)."""
        out = [self._encoder.encode(self._text.feed(piece)) for piece in self._decoder.decode(data)]
        out.append(self._encoder.flush())
        return b"".join(out)

    def end(self) -> bytes:
        """The body is complete: the rest, and the end of the content coding."""
        out = [self._encoder.encode(self._text.feed(piece)) for piece in self._decoder.finish()]
        out.append(self._encoder.encode(self._text.end()))
        out.append(self._encoder.finish())
        return b"".join(out)


def body_rewriter(
    url_map: UrlMap, content_type: bytes | None, content_encoding: bytes | None
) -> BodyRewriter | None:
    """A streaming rewriter for this response, or None when the body must pass untouched
    (a type that is not HTML/CSS/JS/JSON/XML, an unknown charset, an unknown or stacked
    content coding)."""
    if content_type is None:
        return None
    media_type, label = _media_type(content_type)
    mode = _mode_of(media_type, url_map.prefix is not None)
    charset = charset_of(label)
    coding = coding_of(content_encoding)
    if mode is None or charset is None or coding is None:
        return None
    return BodyRewriter(url_map, mode, charset, coding)


def _media_type(content_type: bytes) -> tuple[bytes, bytes | None]:
    """`text/html; charset="utf-8"` → (b"text/html", b"utf-8")."""
    media_type, *parameters = content_type.split(b";")
    label = None
    for parameter in parameters:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"charset":
            label = value.strip().strip(b'"').strip()
    return media_type.strip().lower(), label


def _mode_of(media_type: bytes, prefixed: bool) -> Mode | None:
    """How a type is scanned; None for one that is not rewritten."""
    if media_type in _HTML:
        return Mode.HTML if prefixed else Mode.PLAIN
    if media_type in _CSS:
        return Mode.CSS if prefixed else Mode.PLAIN
    if media_type in _PLAIN or media_type.endswith((b"+json", b"+xml")):
        return Mode.PLAIN
    return None
