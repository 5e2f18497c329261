"""What the body scanner rewrites, and that streaming changes nothing
(bastion.rewrite.scanner, bastion.rewrite.patterns)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.rewrite.patterns import LOOKBEHIND, VALUE_MAX, Mode
from bastion.rewrite.scanner import Scanner
from bastion.rewrite.urls import Origin, UrlMap

INTERNAL = [Origin.parse("http://10.0.0.5:8080"), Origin.parse("http://app")]
PUB = b"https://www.example.com"


def url_map(prefix: bytes | None = b"/legacy") -> UrlMap:
    return UrlMap(INTERNAL, b"https", b"www.example.com", prefix)


def rewrite(text: bytes, mode: Mode = Mode.HTML, prefix: bytes | None = b"/legacy") -> bytes:
    scanner = Scanner(url_map(prefix), mode)
    return scanner.feed(text) + scanner.end()


def streamed(text: bytes, cuts: list[int], mode: Mode, prefix: bytes | None) -> bytes:
    scanner = Scanner(url_map(prefix), mode)
    out, last = [], 0
    for cut in sorted(cuts):
        out.append(scanner.feed(text[last:cut]))
        last = cut
    out.append(scanner.feed(text[last:]))
    return b"".join(out) + scanner.end()


# --- absolute URLs, every type ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'"http://10.0.0.5:8080/api"', b'"' + PUB + b'/legacy/api"'),
        (b"'https://10.0.0.5:8080'", b"'" + PUB + b"/legacy'"),
        (b"(HTTP://APP/x)", b"(" + PUB + b"/legacy/x)"),
        (b"=http://app:80/x ", b"=" + PUB + b"/legacy/x "),
        (b'"//10.0.0.5:8080/x"', b'"//www.example.com/legacy/x"'),
        (b"url(//app/i.png)", b"url(//www.example.com/legacy/i.png)"),
        (b'"http:\\/\\/10.0.0.5:8080\\/api"', b'"https:\\/\\/www.example.com\\/legacy\\/api"'),
        (b'"\\/\\/app\\/x"', b'"\\/\\/www.example.com\\/legacy\\/x"'),
        (b'"http:\\/\\/app\\/legacy\\/x"', b'"https:\\/\\/www.example.com\\/legacy\\/x"'),
        (b'"http://app/legacy"', b'"' + PUB + b'/legacy"'),
        (b'"http://app/legacy?a"', b'"' + PUB + b'/legacy?a"'),
        (b'"http://app/legacyx"', b'"' + PUB + b'/legacy/legacyx"'),
        (b"http://app/x", PUB + b"/legacy/x"),  # at the very start of a body
        (b"a http://app", b"a " + PUB + b"/legacy"),  # at the very end
    ],
)
def test_absolute_urls(text: bytes, expected: bytes) -> None:
    assert rewrite(text, Mode.PLAIN) == expected
    assert rewrite(text, Mode.HTML) == expected
    assert rewrite(text, Mode.CSS) == expected


@pytest.mark.parametrize(
    "text",
    [
        b'"http://10.0.0.5:80800/"',
        b'"http://app.evil.com/"',
        b'"http://app@evil.com/"',
        b'"http://app-2/"',
        b'"http://app:8080/"',
        b'"xhttp://app/"',
        b'"git+http://app/"',
        b'"ftp://app/"',
        b'"file:///app/"',
        b'"a//app/"',
        b'"///app/"',
        b'"http:/app/"',
        b'"http://ap"',
        b'"https://www.example.com/x"',
    ],
)
def test_not_internal_absolute_urls(text: bytes) -> None:
    assert rewrite(text, Mode.PLAIN) == text
    assert rewrite(text, Mode.HTML) == text


def test_without_prefix_only_the_authority_changes() -> None:
    text = b'<a href="http://app/x">y</a><a href="/z">'
    assert rewrite(text, Mode.HTML, None) == b'<a href="' + PUB + b'/x">y</a><a href="/z">'


# --- HTML under a prefix ----------------------------------------------------------------

PREFIXED_HTML = [
    (b'<a href="/x">', b'<a href="/legacy/x">'),
    (b"<a HREF='/x'>", b"<a HREF='/legacy/x'>"),
    (b"<a href=/x>", b"<a href=/legacy/x>"),
    (b'<a href = "/x">', b'<a href = "/legacy/x">'),
    (b'<a href=" /x">', b'<a href=" /legacy/x">'),
    (b'<a\nclass="c"\nhref="/x?y#z">', b'<a\nclass="c"\nhref="/legacy/x?y#z">'),
    (b'<a class="c"href="/x">', b'<a class="c"href="/legacy/x">'),
    (b'<img src="/i.png" alt="">', b'<img src="/legacy/i.png" alt="">'),
    (
        b'<form action="/f"><button formaction="/g">',
        b'<form action="/legacy/f"><button formaction="/legacy/g">',
    ),
    (b'<video poster="/p.jpg">', b'<video poster="/legacy/p.jpg">'),
    (b'<object data="/d.swf">', b'<object data="/legacy/d.swf">'),
    (b'<q cite="/c">', b'<q cite="/legacy/c">'),
    (b'<body background="/b.png">', b'<body background="/legacy/b.png">'),
    (b'<use xlink:href="/s.svg#i">', b'<use xlink:href="/legacy/s.svg#i">'),
    (b'<html manifest="/m.appcache">', b'<html manifest="/legacy/m.appcache">'),
    (b'<a href="/">', b'<a href="/legacy/">'),
    (b'<a href="/legacyfoo">', b'<a href="/legacy/legacyfoo">'),
    (b'<a href="http://app/x">', b'<a href="' + PUB + b'/legacy/x">'),
    # srcset: each candidate
    (b'<img srcset="/a.png 1x, /b.png 2x">', b'<img srcset="/legacy/a.png 1x, /legacy/b.png 2x">'),
    (
        b"<img srcset='/legacy/a.png 1x,/b.png 2x'>",
        b"<img srcset='/legacy/a.png 1x,/legacy/b.png 2x'>",
    ),
    (b"<source srcset=/a.webp>", b"<source srcset=/legacy/a.webp>"),
    (
        b'<img srcset="http://app/a.png 1x, //cdn/b.png 2x">',
        b'<img srcset="' + PUB + b'/legacy/a.png 1x, //cdn/b.png 2x">',
    ),
    (b'<link imagesrcset="/a.png 480w">', b'<link imagesrcset="/legacy/a.png 480w">'),
    # meta refresh
    (
        b'<meta http-equiv="refresh" content="0; url=/next">',
        b'<meta http-equiv="refresh" content="0; url=/legacy/next">',
    ),
    (
        b"<META HTTP-EQUIV=Refresh CONTENT=\"5;URL='/n'\">",
        b"<META HTTP-EQUIV=Refresh CONTENT=\"5;URL='/legacy/n'\">",
    ),
    (
        b'<meta content="0; url=/n" http-equiv="refresh">',
        b'<meta content="0; url=/legacy/n" http-equiv="refresh">',
    ),
    (
        b'<meta http-equiv="refresh" content="3;/n">',
        b'<meta http-equiv="refresh" content="3;/legacy/n">',
    ),
    (
        b'<meta http-equiv="refresh" content="0; url=http://app/n">',
        b'<meta http-equiv="refresh" content="0; url=' + PUB + b'/legacy/n">',
    ),
    (
        b'<meta name="refresh-hint" content="0; url=/n">',
        b'<meta name="refresh-hint" content="0; url=/n">',
    ),
    (
        b'<meta property="og:url" content="http://app/p">',
        b'<meta property="og:url" content="' + PUB + b'/legacy/p">',
    ),
    # CSS in <style> and style=""
    (
        b"<style>a{background:url(/a.png)}</style>",
        b"<style>a{background:url(/legacy/a.png)}</style>",
    ),
    (
        b'<style>b{background:URL( "/b.png" )}</style>',
        b'<style>b{background:URL( "/legacy/b.png" )}</style>',
    ),
    (
        b"<style>@import '/c.css'; @import url(/d.css);</style>",
        b"<style>@import '/legacy/c.css'; @import url(/legacy/d.css);</style>",
    ),
    (
        b'<style media="x">a{b:url(/a)}</STYLE><p>url(/x)</p>',
        b'<style media="x">a{b:url(/legacy/a)}</STYLE><p>url(/x)</p>',
    ),
    (
        b"<div style=\"background:url('/s.png')\">",
        b"<div style=\"background:url('/legacy/s.png')\">",
    ),
    (b"<div style='x:url(/s);y:url(//cdn/t)'>", b"<div style='x:url(/legacy/s);y:url(//cdn/t)'>"),
    (b"<div style=x:url(/s)>", b"<div style=x:url(/legacy/s)>"),
    (b'<div style="color:red">', b'<div style="color:red">'),
    # <script>: its src, but not what is inside
    (
        b'<script src="/app.js"></script><a href="/x">',
        b'<script src="/legacy/app.js"></script><a href="/legacy/x">',
    ),
    (
        b"<script>h='<a href=\"/x\">'; u='http://app/y'</script>",
        b"<script>h='<a href=\"/x\">'; u='" + PUB + b"/legacy/y'</script>",
    ),
    (
        b'<SCRIPT type="module">x = "url(/a)"</Script ><img src="/i">',
        b'<SCRIPT type="module">x = "url(/a)"</Script ><img src="/legacy/i">',
    ),
    (b'<script src="/a.js"/><a href="/x">', b'<script src="/legacy/a.js"/><a href="/legacy/x">'),
    # comments: absolute URLs only
    (
        b'<!-- <a href="/x"> http://app/y --><a href="/z">',
        b'<!-- <a href="/x"> ' + PUB + b'/legacy/y --><a href="/legacy/z">',
    ),
    (b'<!-- <style> --><a href="/z">', b'<!-- <style> --><a href="/legacy/z">'),
    (b'<!--><a href="/z">', b'<!--><a href="/legacy/z">'),
    (b'<!-- x --!><a href="/z">', b'<!-- x --!><a href="/legacy/z">'),
]


@pytest.mark.parametrize(("text", "expected"), PREFIXED_HTML)
def test_html_under_prefix(text: bytes, expected: bytes) -> None:
    assert rewrite(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        b'<a href="//cdn.example/x">',
        b'<a href="/\\evil.example/x">',
        b'<a href="/legacy/x">',
        b'<a href="/legacy">',
        b"<a href='/legacy?x'>",
        b'<a href="x/y">',
        b'<a href="../y">',
        b'<a data-href="/x">',
        b'<a title="/x">',
        b'<a hreflang="/x">',
        b'<a href  =  "/x">',  # two spaces before "=": not recognised (documented)
        b"<p>url(/x) and @import '/y'</p>",
        b'<img srcset="//cdn/a.png 1x">',
    ],
)
def test_html_left_alone(text: bytes) -> None:
    assert rewrite(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"a{background:url(/a.png)}", b"a{background:url(/legacy/a.png)}"),
        (b"a{b:url('/a') url(\"/b\")}", b"a{b:url('/legacy/a') url(\"/legacy/b\")}"),
        (b'@import "/c.css";@import"/d.css";', b'@import "/legacy/c.css";@import"/legacy/d.css";'),
        (b"a{b:url(/legacy/a)}", b"a{b:url(/legacy/a)}"),
        (b"a{b:url(//cdn/a)}", b"a{b:url(//cdn/a)}"),
        (b"a{b:myurl(/a)}", b"a{b:myurl(/a)}"),
        (b"a{b:url(http://app/a)}", b"a{b:url(" + PUB + b"/legacy/a)}"),
        (b'a{b:"</style>"} c{d:url(/e)}', b'a{b:"</style>"} c{d:url(/legacy/e)}'),
    ],
)
def test_css_body(text: bytes, expected: bytes) -> None:
    assert rewrite(text, Mode.CSS) == expected


def test_plain_mode_leaves_root_relative_alone() -> None:
    text = b'{"href": "/x", "u": "http://app/y"}<a href="/z"> url(/w)'
    assert (
        rewrite(text, Mode.PLAIN)
        == b'{"href": "/x", "u": "' + PUB + b'/legacy/y"}<a href="/z"> url(/w)'
    )


def test_srcset_value_longer_than_the_limit_is_left() -> None:
    value = b"/a.png 1x, " + b"x" * VALUE_MAX
    text = b'<img srcset="' + value + b'"><a href="/b">'
    assert rewrite(text) == b'<img srcset="' + value + b'"><a href="/legacy/b">'


def test_is_idempotent() -> None:
    text = b"".join(t for t, _ in PREFIXED_HTML)
    once = rewrite(text)
    assert rewrite(once) == once


# --- the fast scanner finds exactly what one regex over the whole body finds -----------

TOKENS = [
    b"http://",
    b"https://",
    b"HTTP://",
    b"//",
    b"\\/\\/",
    b"http:\\/\\/",
    b"https:",
    b"10.0.0.5:8080",
    b"10.0.0.5:80",
    b"app",
    b"App:80",
    b"app:443",
    b"app.evil",
    b"/legacy",
    b"/legacyx",
    b"/x",
    b"/",
    b"\\",
    b"?",
    b"#",
    b"x",
    b"0",
    b".",
    b":",
    b"@",
    b"-",
    b" ",
    b"\n",
    b'"',
    b"'",
    b"=",
    b"<",
    b">",
    b"(",
    b")",
    b",",
    b"href=",
    b"HREF =",
    b"src=",
    b"data=",
    b"<a ",
    b"<img ",
    b"srcset=",
    b"style=",
    b" 2x",
    b"url(",
    b"@import ",
    b"<script>",
    b"<script src=",
    b"</script>",
    b"<style>",
    b"</style>",
    b"<!--",
    b"-->",
    b"/>",
    b'<meta http-equiv="refresh" content="0; url=',
    b"content=",
]
texts = st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join)


def oracle(text: bytes, mode: Mode, prefix: bytes | None) -> bytes:
    """One combined regex per mode, `re`'s own leftmost-first search over the whole text;
    the replacements are the scanner's."""
    scanner = Scanner(url_map(prefix), mode)
    grammar = url_map(prefix).grammar
    out: list[bytes] = []
    pos = 0
    while True:
        patterns = [grammar.absolute.pattern, *(p.pattern for p in scanner._structure)]
        match = re.compile(b"|".join(patterns)).search(text, pos)
        if match is None:
            return b"".join(out) + text[pos:]
        out += [text[pos : match.start()], scanner._rewrite(match)]
        pos = match.end()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.sampled_from(list(Mode)), st.sampled_from([b"/legacy", None]))
@example(b'<a href="/x">http://app/', Mode.HTML, b"/legacy")
def test_scanner_equals_one_regex(text: bytes, mode: Mode, prefix: bytes | None) -> None:
    assert rewrite(text, mode, prefix) == oracle(text, mode, prefix)


# --- a URL cut anywhere is rewritten as if whole -----------------------------------------


def _srcset(size: int) -> bytes:
    """A srcset value of `size` bytes whose last candidate is root-relative."""
    return b'<img srcset="/a 1x,' + b" " * (size - 11) + b'/b 2x">'


def _style(size: int) -> bytes:
    return b"<div style='" + b" " * (size - 7) + b"url(/s)'>"


def _meta(size: int) -> bytes:
    """A <meta> whose text between "<meta" and ">" is `size` bytes."""
    head, tail = b' http-equiv="refresh"', b'content="0; url=/n"'
    return b"<meta" + head + b" " * (size - len(head) - len(tail)) + tail + b">"


@pytest.mark.parametrize(
    ("tags", "rewritten"),
    [
        (b'<a href="http://10.0.0.5:8080/legacyx?q"><img srcset="/a 1x, /b 2x">', 3),
        (_srcset(VALUE_MAX), 2),  # the longest value looked into
        (_srcset(VALUE_MAX + 1), 0),  # one byte more: left alone, however it is cut
        (_style(VALUE_MAX), 1),
        (_style(VALUE_MAX + 1), 0),
        (_meta(VALUE_MAX), 1),
        (_meta(VALUE_MAX + 1), 0),
    ],
    ids=["short", "srcset", "srcset+1", "style", "style+1", "meta", "meta+1"],
)
def test_cut_at_every_byte(tags: bytes, rewritten: int) -> None:
    """Cut the input at every byte around the tags, and at every byte around where the
    scanner then stops (a reach before the end of what it has)."""
    grammar = url_map().grammar
    filler = b"<p>" + b"x" * (grammar.reach + 100) + b"</p>"
    text = filler + tags + filler
    whole = rewrite(text)
    assert whole.count(b"/legacy/") == rewritten
    start = len(filler) - LOOKBEHIND - 4
    for offset in range(len(tags) + LOOKBEHIND + 8):
        for cut in (start + offset, start + offset + grammar.reach):
            assert streamed(text, [cut], Mode.HTML, b"/legacy") == whole, cut


def test_one_byte_reads() -> None:
    text = b"".join(t for t, _ in PREFIXED_HTML) * 3
    scanner = Scanner(url_map(), Mode.HTML)
    out = b"".join(scanner.feed(text[i : i + 1]) for i in range(len(text))) + scanner.end()
    assert out == rewrite(text)


long_texts = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.integers(0, 3000).map(lambda n: b"y" * n)),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), long_texts, st.sampled_from(list(Mode)), st.sampled_from([b"/legacy", None]))
def test_any_cuts_same_output(
    data: st.DataObject, text: bytes, mode: Mode, prefix: bytes | None
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    assert streamed(text, cuts, mode, prefix) == rewrite(text, mode, prefix)


def test_holds_back_a_bounded_tail_and_returns_the_rest() -> None:
    scanner = Scanner(url_map(), Mode.HTML)
    bound = url_map().grammar.reach + LOOKBEHIND
    read = b'<a href="/x">http://app/y</a>' * 3000
    total_in = total_out = 0
    for _ in range(20):
        out = scanner.feed(read)
        total_in, total_out = total_in + len(read), total_out + len(out)
        assert out
        assert scanner.buffered <= bound
    assert total_out + bound > total_in  # all but the held-back tail came out
