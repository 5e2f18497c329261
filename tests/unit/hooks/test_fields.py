"""HeaderFields (bastion.hooks.fields): reading and editing a header list in place, and the
edits it refuses."""

from __future__ import annotations

import pytest

from bastion.hooks.fields import REQUEST_RESERVED, RESPONSE_RESERVED, HeaderFields
from bastion.http.events import Headers


def fields() -> tuple[Headers, HeaderFields]:
    raw: Headers = [(b"host", b"a.test"), (b"accept", b"*/*"), (b"x-a", b"1"), (b"x-a", b"2")]
    return raw, HeaderFields(raw, REQUEST_RESERVED)


def test_reading_is_case_insensitive_and_in_wire_order() -> None:
    _, view = fields()
    assert view.get("X-A") == "1"
    assert view.get_all("x-a") == ["1", "2"]
    assert view.get("missing") is None and view.get("missing", "d") == "d"
    assert view.get_all("missing") == []
    assert "ACCEPT" in view and "nope" not in view and 3 not in view
    assert list(view) == [("host", "a.test"), ("accept", "*/*"), ("x-a", "1"), ("x-a", "2")]
    assert len(view) == 4


def test_set_replaces_every_field_of_the_name_where_the_first_was() -> None:
    raw, view = fields()
    view.set("X-A", "3")
    assert raw == [(b"host", b"a.test"), (b"accept", b"*/*"), (b"x-a", b"3")]
    view.set("X-New", b"bytes too")
    assert raw[-1] == (b"x-new", b"bytes too")


def test_add_appends_and_remove_counts() -> None:
    raw, view = fields()
    view.add("x-a", " 3 ")
    assert raw[-1] == (b"x-a", b"3")  # outer spaces trimmed
    assert view.remove("X-A") == 3
    assert view.remove("x-a") == 0
    assert raw == [(b"host", b"a.test"), (b"accept", b"*/*")]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("x-evil", "a\r\nx-injected: 1", ValueError),
        ("x-evil", b"a\nb", ValueError),
        ("x-evil", "nul\x00", ValueError),
        ("x-evil", "caf\u00e9 \u2603", ValueError),  # not Latin-1
        ("bad name", "v", ValueError),
        ("x:colon", "v", ValueError),
        ("", "v", ValueError),
        ("x-number", 3, TypeError),
    ],
)
def test_injection_and_bad_names_are_refused(name: str, value: object, error: type) -> None:
    raw, view = fields()
    before = list(raw)
    with pytest.raises(error):
        view.set(name, value)  # type: ignore[arg-type]
    assert raw == before


@pytest.mark.parametrize(
    "name", ["Content-Length", "transfer-encoding", "Connection", "upgrade", "host", "x-request-id"]
)
def test_fields_bastion_owns_cannot_be_edited_on_requests(name: str) -> None:
    _, view = fields()
    for edit in (
        lambda: view.set(name, "1"),
        lambda: view.add(name, "1"),
        lambda: view.remove(name),
    ):
        with pytest.raises(ValueError, match="hooks cannot edit"):
            edit()


def test_responses_may_edit_host_but_not_framing() -> None:
    raw: Headers = [(b"content-length", b"3")]
    view = HeaderFields(raw, RESPONSE_RESERVED)
    view.set("host", "x")
    with pytest.raises(ValueError, match="frames the message"):
        view.remove("content-length")


def test_a_read_only_view_reads_but_refuses_edits() -> None:
    raw: Headers = [(b"x-a", b"1")]
    view = HeaderFields(raw, RESPONSE_RESERVED, read_only="too late")
    assert view.get("x-a") == "1"
    with pytest.raises(RuntimeError, match="too late"):
        view.set("x-a", "2")
    assert raw == [(b"x-a", b"1")]
