"""Charsets: which bodies the scanner can read as bytes, and the transcoding of the others.

The scanner looks for ASCII (`http://`, `href=`, `/`), so it works on the raw bytes of a
charset in which every byte below 0x80 is that ASCII character and never part of another
character: UTF-8, US-ASCII, the ISO-8859 and Windows single-byte families, KOI8, EUC-JP
(all of whose multibyte bytes are >= 0x80). Other charsets a browser knows are decoded,
rewritten as UTF-8 and encoded back, incrementally: UTF-16/32 (NUL bytes between the ASCII),
Shift_JIS, Big5, GBK (also for the label GB2312), GB18030, UHC (also for EUC-KR) — trail
bytes in the ASCII range — and ISO-2022 (ASCII bytes that mean kanji after an escape). A
charset Python does not know, or one outside these lists (UTF-7, say), is not rewritten.

Undecodable bytes survive the round trip (`surrogateescape`; for UTF-16/32, which cannot
carry those, lone surrogates pass with `surrogatepass` and invalid input is a RewriteError).
The charset comes from Content-Type; a byte order mark at the start of the body wins over it,
as in browsers (UTF-8 and UTF-16 marks; a declared UTF-32 is sniffed for its own mark). A
`<meta charset>` inside HTML is not looked at: the ASCII-compatible charsets all read the
same here, and an HTML page in UTF-16 without a BOM and without a Content-Type charset is
left as it is (the patterns never match between NUL bytes, so nothing is damaged).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bastion.rewrite.errors import RewriteError

# Python codec names (codecs.lookup(label).name) read as bytes.
_ASCII_COMPATIBLE = frozenset(
    {"utf-8", "ascii", "latin-1", "iso8859-1", "cp437", "cp850", "cp866", "cp874"}
    | {f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)}
    | {f"cp{n}" for n in range(1250, 1259)}
    | {"koi8-r", "koi8-u", "koi8-t", "mac-roman", "mac-cyrillic", "tis-620"}
    | {"euc_jp", "euc_jis_2004", "euc_jisx0213"}
)
# Python codec names that need decoding (their ASCII bytes are not always ASCII).
_TRANSCODED = frozenset(
    {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"}
    | {"shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213", "big5", "big5hkscs", "cp950"}
    | {"gbk", "gb18030", "cp949", "johab", "hz"}
    | {"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_3", "iso2022_kr"}
)
# Labels as browsers read them (WHATWG Encoding) where Python spells or reads them otherwise:
# pages labelled EUC-KR or GB2312 are decoded as the supersets UHC and GBK, whose trail
# bytes fall in the ASCII range.
_ALIASES = {
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "windows-949": "cp949",
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "windows-31j": "cp932",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc_jp",
    "cn-big5": "big5",
    "dos-874": "cp874",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso8859-8",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
}
_Marks = tuple[tuple[bytes, str | None], ...]
_BOMS: _Marks = ((codecs.BOM_UTF8, None), (codecs.BOM_UTF16_LE, "utf-16-le"))
_BOMS += ((codecs.BOM_UTF16_BE, "utf-16-be"),)
_UTF32_BOMS: _Marks = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"))
_SNIFF = 4  # bytes looked at for a byte order mark


@dataclass(frozen=True, slots=True)
class Charset:
    """How a body's text is read: `codec` None = as bytes; else a Python codec name."""

    codec: str | None


BYTES = Charset(None)


def charset_of(label: bytes | None) -> Charset | None:
    """The declared charset (Content-Type `charset=`); None when it is unknown."""
    if not label:
        return BYTES
    text = label.decode("ascii", "replace").strip().lower()
    try:
        name = codecs.lookup(_ALIASES.get(text, text)).name
    except LookupError:
        return None
    if name in _ASCII_COMPATIBLE:
        return BYTES
    if name in _TRANSCODED:
        return Charset(name)
    return None


class Stage(Protocol):
    """A step of the body pipeline: bytes in, bytes out."""

    def feed(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...

    @property
    def buffered(self) -> int: ...


class CharsetReader:
    """Waits for the first bytes of the body to check for a byte order mark, then passes
    the text to the scanner, through a transcoder unless the charset is read as bytes."""

    __slots__ = ("_charset", "_head", "_make_scanner", "_stage")

    def __init__(self, charset: Charset, make_scanner: Callable[[], Stage]) -> None:
        self._charset = charset
        self._make_scanner = make_scanner
        self._head = b""
        self._stage: Stage | None = None

    @property
    def buffered(self) -> int:
        return len(self._head) + (self._stage.buffered if self._stage is not None else 0)

    def feed(self, data: bytes) -> bytes:
        if self._stage is not None:
            return self._stage.feed(data)
        self._head += data
        if len(self._head) < _SNIFF:
            return b""
        return self._start().feed(self._take_head())

    def end(self) -> bytes:
        if self._stage is not None:
            return self._stage.end()
        stage = self._start()
        return stage.feed(self._take_head()) + stage.end()

    def _take_head(self) -> bytes:
        head, self._head = self._head, b""
        return head

    def _start(self) -> Stage:
        codec = _sniff(self._head, self._charset.codec)
        scanner = self._make_scanner()
        self._stage = scanner if codec is None else Transcoder(codec, scanner)
        return self._stage


def _sniff(head: bytes, declared: str | None) -> str | None:
    """The codec to read with: a byte order mark's, else the declared one."""
    marks: _Marks
    default: str | None
    if declared is not None and declared.startswith("utf-32"):
        marks = _UTF32_BOMS
        default = "utf-32-be" if declared == "utf-32" else declared
    else:
        marks = _BOMS
        default = "utf-16-le" if declared == "utf-16" else declared
    for mark, codec in marks:
        if head.startswith(mark):
            return codec
    return default


class Transcoder:
    """Decodes a charset incrementally, hands the scanner UTF-8, encodes its output back."""

    __slots__ = ("_codec", "_decoder", "_encoder", "_inner", "_utf8")

    def __init__(self, codec: str, inner: Stage) -> None:
        errors = "surrogatepass" if codec.startswith("utf-") else "surrogateescape"
        self._codec = codec
        self._decoder = codecs.getincrementaldecoder(codec)(errors)
        self._encoder = codecs.getincrementalencoder(codec)(errors)
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        self._inner = inner

    @property
    def buffered(self) -> int:
        return self._inner.buffered + len(self._decoder.getstate()[0])

    def feed(self, data: bytes) -> bytes:
        return self._back(self._inner.feed(self._decode(data, final=False)), final=False)

    def end(self) -> bytes:
        rest = self._inner.feed(self._decode(b"", final=True))
        return self._back(rest + self._inner.end(), final=True)

    def _decode(self, data: bytes, *, final: bool) -> bytes:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise RewriteError(f"body is not valid {self._codec}: {exc.reason}") from exc
        return text.encode("utf-8", "surrogatepass")

    def _back(self, rewritten: bytes, *, final: bool) -> bytes:
        return self._encoder.encode(self._utf8.decode(rewritten, final), final)
