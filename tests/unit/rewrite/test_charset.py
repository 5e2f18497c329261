"""Which charsets are read as bytes, which are transcoded, which are left alone
(bastion.rewrite.charset)."""

from __future__ import annotations

import pytest

from bastion.rewrite.charset import BYTES, Charset, charset_of


@pytest.mark.parametrize(
    "label",
    [
        None,
        b"",
        b"utf-8",
        b"UTF8",
        b" utf-8 ",
        b"us-ascii",
        b"iso-8859-1",
        b"latin1",
        b"ISO-8859-15",
        b"windows-1252",
        b"windows-1251",
        b"windows-874",
        b"koi8-r",
        b"euc-jp",
        b"macintosh",
    ],
)
def test_ascii_compatible_read_as_bytes(label: bytes | None) -> None:
    assert charset_of(label) == BYTES


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        (b"utf-16", "utf-16"),
        (b"UTF-16LE", "utf-16-le"),
        (b"utf-16be", "utf-16-be"),
        (b"utf-32", "utf-32"),
        (b"shift_jis", "shift_jis"),
        (b"Shift-JIS", "shift_jis"),
        (b"windows-31j", "cp932"),
        (b"big5", "big5"),
        (b"gbk", "gbk"),
        (b"gb2312", "gbk"),  # as browsers read it: GBK, trail bytes in the ASCII range
        (b"euc-kr", "cp949"),  # likewise UHC
        (b"gb18030", "gb18030"),
        (b"iso-2022-jp", "iso2022_jp"),
    ],
)
def test_others_transcoded(label: bytes, codec: str) -> None:
    assert charset_of(label) == Charset(codec)


@pytest.mark.parametrize("label", [b"x-unknown", b"utf-7", b"hex", b"rot13", b"idna", b"\xff"])
def test_unknown_or_unsuitable(label: bytes) -> None:
    assert charset_of(label) is None
