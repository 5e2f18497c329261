"""Request-target parsing and path normalisation (bastion.http.target)."""

from __future__ import annotations

import dataclasses
import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bastion.http.target import RequestTarget, TargetError, normalize_path, parse_target

UNRESERVED = (string.ascii_letters + string.digits + "-._~").encode()
URI_BYTES = UNRESERVED + b"!$&'()*+,;=:/?[]@%"
FORBIDDEN_BYTES = bytes(b for b in range(256) if b not in URI_BYTES)


# --- an independent model of the rules, used as the oracle ------------------------------


def model_decode(path: bytes) -> bytes:
    """Step 1 written with a regex: decode unreserved escapes, uppercase the others."""
    if re.search(rb"%(?![0-9A-Fa-f]{2})", path):
        raise TargetError("invalid escape")

    def one(m: re.Match[bytes]) -> bytes:
        value = int(m.group(1), 16)
        return bytes([value]) if value in UNRESERVED else b"%" + m.group(1).upper()

    return re.sub(rb"%([0-9A-Fa-f]{2})", one, path)


def model_remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 5.2.4 as written (input and output buffers), but a climb above "/" raises."""
    inp, out = path, b""

    def pop(out: bytes) -> bytes:
        if not out:
            raise TargetError("climbs above root")
        return out[: out.rfind(b"/")]

    while inp:
        if inp.startswith((b"../", b"./")):
            inp = inp[inp.find(b"/") + 1 :]
        elif inp.startswith(b"/./") or inp == b"/.":
            inp = b"/" + inp[3:]
        elif inp.startswith(b"/../") or inp == b"/..":
            inp = b"/" + inp[4:]
            out = pop(out)
        elif inp in (b".", b".."):
            inp = b""
        else:
            end = inp.find(b"/", 1)
            end = len(inp) if end == -1 else end
            out, inp = out + inp[:end], inp[end:]
    return out or b"/"


def model_normalize(path: bytes) -> bytes:
    return model_remove_dot_segments(re.sub(rb"/+", b"/", model_decode(path)))


# --- strategies ----------------------------------------------------------------------------

escape = st.builds(
    lambda v, spec: f"%{v:{spec}}", st.integers(0, 255), st.sampled_from(["02x", "02X"])
)
pchar = st.one_of(
    st.sampled_from(list((UNRESERVED + b"!$&'()*+,;=:@[]").decode())),
    escape,
)
segment = st.one_of(
    st.sampled_from(["", ".", "..", "%2e", "%2E%2e", ".%2E", "...", ".a"]),
    st.lists(pchar, max_size=6).map("".join),
)
paths = st.lists(segment, min_size=1, max_size=10).map(lambda s: ("/" + "/".join(s)).encode())
queries = st.binary(max_size=20).map(lambda b: bytes(c for c in b if c in URI_BYTES))


def normalised_or_none(path: bytes) -> bytes | None:
    try:
        return normalize_path(path)
    except TargetError:
        return None


# --- normalize_path: tables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", b"/"),
        (b"/index.html", b"/index.html"),
        (b"/a/%2e%2E/b", b"/b"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/a%2Fb/..", b"/"),
        (b"//a///b", b"/a/b"),
        (b"/a/%7Euser", b"/a/~user"),
        (b"/%c3%a9", b"/%C3%A9"),
        (b"/%41%62%30%2D%5f", b"/Ab0-_"),
        (b"/%20x", b"/%20x"),
        (b"/a/b/", b"/a/b/"),
        (b"/a/.", b"/a/"),
        (b"/a/./b", b"/a/b"),
        (b"/a/..", b"/"),
        (b"/a/../", b"/"),
        (b"/a/b/../c", b"/a/c"),
        (b"/a//../b", b"/b"),
        (b"/./", b"/"),
        (b"/.", b"/"),
        (b"/...", b"/..."),
        (b"/.hidden/x", b"/.hidden/x"),
        (b"/a/..b/c", b"/a/..b/c"),
        (b"/a/%2e/b", b"/a/b"),
        (b"/a/%2E%2e%2f/b", b"/a/..%2F/b"),
        (b"/a/b/%2e%2e/", b"/a/"),
    ],
)
def test_normalize_path_table(raw: bytes, expected: bytes) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/..",
        b"/../x",
        b"/a/../../b",
        b"/%2e%2e/x",
        b"/%2E%2E",
        b"/a/./../..",
        b"//..//x",
        b"/%zz",
        b"/%4",
        b"/a%",
        b"/%%41",
        b"/%g0",
        b"",
        b"a/b",
        b"/a b",
        b"/a\\b",
        b"/a\x00",
        b"/\x7f",
        b"/caf\xc3\xa9",
        b"/a#frag",
        b"/a?q",
        b'/"',
        b"/<>",
        b"/^",
        b"/`",
        b"/{|}",
    ],
)
def test_normalize_path_refuses(raw: bytes) -> None:
    with pytest.raises(TargetError):
        normalize_path(raw)


def test_common_path_is_returned_as_is() -> None:
    path = b"/api/v1/users/42/profile.json"
    assert normalize_path(path) is path


# --- normalize_path: properties ------------------------------------------------------------


@given(paths)
@example(b"/a/%2e%2e/../b")
def test_normalize_agrees_with_rfc3986_model(path: bytes) -> None:
    try:
        expected: bytes | None = model_normalize(path)
    except TargetError:
        expected = None
    assert normalised_or_none(path) == expected


@given(paths)
def test_normalize_is_idempotent(path: bytes) -> None:
    once = normalised_or_none(path)
    if once is not None:
        assert normalize_path(once) == once


@given(paths)
def test_normalized_path_is_clean(path: bytes) -> None:
    result = normalised_or_none(path)
    if result is None:
        return
    assert result.startswith(b"/")
    assert b"//" not in result
    segments = result.split(b"/")[1:]
    assert b"." not in segments
    assert b".." not in segments
    assert all(byte in URI_BYTES for byte in result)
    for hex_pair in re.findall(rb"%(..)", result):
        assert hex_pair == hex_pair.upper()
        assert int(hex_pair, 16) not in UNRESERVED


@given(paths)
def test_refused_only_for_a_climb_or_a_bad_escape(path: bytes) -> None:
    """Nesting a path one level deeper per '..' it holds always makes it acceptable."""
    if re.search(rb"%(?![0-9A-Fa-f]{2})", path):
        return
    depth = len(model_decode(path).split(b"/"))
    assert normalize_path(b"/d" * depth + path).startswith(b"/d")


@given(paths, st.data())
def test_decoding_equivalent_paths_normalise_equally(path: bytes, data: st.DataObject) -> None:
    """Escaping unreserved bytes, or changing the case of escape hex, changes nothing."""
    variant = bytearray()
    i = 0
    while i < len(path):
        if path[i] == ord("%"):
            body = path[i + 1 : i + 3]
            variant += b"%" + (body.lower() if data.draw(st.booleans()) else body.upper())
            i += 3
            continue
        byte = path[i]
        if byte in UNRESERVED and data.draw(st.booleans()):
            variant += f"%{byte:02{data.draw(st.sampled_from('xX'))}}".encode()
        else:
            variant.append(byte)
        i += 1
    assert normalised_or_none(bytes(variant)) == normalised_or_none(path)


@given(paths, st.sampled_from(list(FORBIDDEN_BYTES)), st.data())
def test_a_forbidden_byte_anywhere_is_refused(path: bytes, byte: int, data: st.DataObject) -> None:
    at = data.draw(st.integers(1, len(path)))
    with pytest.raises(TargetError):
        normalize_path(path[:at] + bytes([byte]) + path[at:])


# --- parse_target ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "method", "expected"),
    [
        (b"/", b"GET", RequestTarget(b"/", b"", None)),
        (b"/a/../b?x=1&y=%2F", b"GET", RequestTarget(b"/b", b"x=1&y=%2F", None)),
        (b"/p?", b"GET", RequestTarget(b"/p", b"", None)),
        (b"/p??a=/../", b"GET", RequestTarget(b"/p", b"?a=/../", None)),
        (b"/p?a=%zz", b"GET", RequestTarget(b"/p", b"a=%zz", None)),
        (b"http://example.com/x?q", b"GET", RequestTarget(b"/x", b"q", b"example.com")),
        (b"HTTPS://Example.com:8443", b"GET", RequestTarget(b"/", b"", b"Example.com:8443")),
        (b"http://h:1?q=1", b"GET", RequestTarget(b"/", b"q=1", b"h:1")),
        (b"http://[::1]:8080//a/./b", b"GET", RequestTarget(b"/a/b", b"", b"[::1]:8080")),
        (b"*", b"OPTIONS", RequestTarget(b"*", b"", None)),
        (b"//evil.example/x", b"GET", RequestTarget(b"/evil.example/x", b"", None)),
    ],
)
def test_parse_target_table(raw: bytes, method: bytes, expected: RequestTarget) -> None:
    assert parse_target(raw, method) == expected


@pytest.mark.parametrize(
    ("raw", "method"),
    [
        (b"", b"GET"),
        (b"*", b"GET"),
        (b"foo", b"GET"),
        (b"example.com:443", b"CONNECT"),
        (b"ftp://example.com/", b"GET"),
        (b"http:/x", b"GET"),
        (b"http://", b"GET"),
        (b"http:///x", b"GET"),
        (b"http://user:pw@example.com/", b"GET"),
        (b"http://exa mple.com/", b"GET"),
        (b"/x#frag", b"GET"),
        (b"/x?q#frag", b"GET"),
        (b"/x?a b", b"GET"),
        (b"/x?\xff", b"GET"),
        (b"/a/../../etc/passwd", b"GET"),
        (b"http://h/%2e%2e/x", b"GET"),
    ],
)
def test_parse_target_refuses(raw: bytes, method: bytes) -> None:
    with pytest.raises(TargetError):
        parse_target(raw, method)


def test_target_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="fragment"):
        parse_target(b"/x#y", b"GET")


@pytest.mark.parametrize(
    ("target", "uri"),
    [
        (RequestTarget(b"/a", b"", None), b"/a"),
        (RequestTarget(b"/a", b"x=1", None), b"/a?x=1"),
        (RequestTarget(b"*", b"", None), b"*"),
    ],
)
def test_uri_joins_path_and_query(target: RequestTarget, uri: bytes) -> None:
    assert target.uri == uri


def test_a_target_stays_frozen_and_a_replaced_one_gets_its_own_uri() -> None:
    target = parse_target(b"/a/../b?x=1", b"GET")
    assert target == RequestTarget(b"/b", b"x=1", None)
    assert dataclasses.replace(target, query=b"").uri == b"/b"
    assert dataclasses.replace(target, path=b"/c").uri == b"/c?x=1"
    assert "uri" not in repr(target)
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.path = b"/c"  # type: ignore[misc]


@given(paths, queries)
def test_query_is_kept_byte_for_byte(path: bytes, query: bytes) -> None:
    normal = normalised_or_none(path)
    if normal is None:
        return
    parsed = parse_target(path + b"?" + query, b"GET")
    assert parsed.query == query
    assert parsed.path == normal
    assert parsed.uri == (normal + b"?" + query if query else normal)


@given(paths)
def test_absolute_form_has_the_path_of_origin_form(path: bytes) -> None:
    normal = normalised_or_none(path)
    if normal is None:
        return
    parsed = parse_target(b"http://app.internal:8080" + path, b"POST")
    assert parsed == RequestTarget(normal, b"", b"app.internal:8080")
