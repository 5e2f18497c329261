"""Hook's defaults, Reply's checks (bastion.hooks.hook) and making hooks from their
configured names (bastion.hooks.loading)."""

from __future__ import annotations

import pytest

from bastion.config.values import FrozenMapping
from bastion.hooks import Hook, Reply
from bastion.hooks.loading import make_hook, overrides

HOOKS = "tests.support.hooks_for_tests"


def test_reply_with_text_gets_utf8_and_a_content_type() -> None:
    reply = Reply(403, "non \u00e0 vous", {"X-Why": "policy"})
    assert reply.status == 403
    assert reply.body == "non \u00e0 vous".encode()
    assert reply.headers == (
        (b"x-why", b"policy"),
        (b"content-type", b"text/plain; charset=utf-8"),
    )


def test_reply_keeps_a_given_content_type_and_bytes_bodies() -> None:
    reply = Reply(200, "{}", [("Content-Type", "application/json")])
    assert reply.headers == ((b"content-type", b"application/json"),)
    assert Reply(204).body == b"" and Reply(204).headers == ()
    assert Reply(200, b"\x00raw").headers == ()


@pytest.mark.parametrize(
    "arguments",
    [
        (100,),
        (600,),
        (True,),
        ("200",),
        (200, "", {"content-length": "5"}),
        (200, "", {"transfer-encoding": "chunked"}),
        (200, "", {"x-a": "1\r\nx-b: 2"}),
        (200, 5),
    ],
)
def test_reply_refuses_what_bastion_could_not_send(arguments: tuple[object, ...]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Reply(*arguments)  # type: ignore[arg-type]


def test_make_hook_passes_the_options_and_checks_the_result() -> None:
    options = FrozenMapping({"required": 1})
    made = make_hook(f"{HOOKS}:NeedsOption", options)
    assert made.options is options
    factory_made = make_hook(f"{HOOKS}:make_tagger", FrozenMapping({"tag": "t"}))
    assert type(factory_made).__name__ == "EditResponse"


@pytest.mark.parametrize(
    ("path", "options", "message"),
    [
        (f"{HOOKS}:NeedsOption", {}, f'"{HOOKS}:NeedsOption": the "required" option is missing'),
        (f"{HOOKS}:make_tagger", {}, f"\"{HOOKS}:make_tagger\" failed to start: KeyError: 'tag'"),
        (f"{HOOKS}:NotAHook", {}, f'"{HOOKS}:NotAHook" made a NotAHook, not a bastion.hooks.Hook'),
        ("nowhere.x:Y", {}, 'cannot import "nowhere.x"'),
    ],
)
def test_make_hook_explains_what_went_wrong(
    path: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        make_hook(path, FrozenMapping(options))
    assert str(caught.value).startswith(message)


def test_overrides_tells_which_methods_a_hook_has() -> None:
    class OnlyLogs(Hook):
        def on_log(self, request, entry):  # type: ignore[no-untyped-def]
            pass

    hook = OnlyLogs({})
    assert overrides(hook, "on_log")
    assert not any(
        overrides(hook, method)
        for method in ("on_request", "before_upstream", "on_response", "on_body_chunk")
    )
