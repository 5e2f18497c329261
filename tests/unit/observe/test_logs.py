"""The error log's line format and `setup_error_log`'s effect on the "bastion" logger."""

from __future__ import annotations

import calendar
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from bastion.observe.logs import LOGGER_NAME, ErrorLogFormatter, setup_error_log

FIXED_CREATED = calendar.timegm((2026, 11, 27, 3, 17, 50, 0, 0, 0)) + 0.123
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) ([\w.]+): (.*)")


@pytest.fixture(autouse=True)
def restore_bastion_logger() -> Iterator[None]:
    bastion_logger = logging.getLogger(LOGGER_NAME)
    handlers, level = list(bastion_logger.handlers), bastion_logger.level
    yield
    bastion_logger.handlers[:] = handlers
    bastion_logger.setLevel(level)


def record_at_fixed_time(
    msg: str, *args: object, level: int = logging.WARNING, exc_info: bool = False
) -> logging.LogRecord:
    record = logging.LogRecord(
        "bastion.net.pool", level, __file__, 1, msg, args, sys.exc_info() if exc_info else None
    )
    record.created = FIXED_CREATED
    return record


def test_line_format_is_utc_millis_level_logger_message() -> None:
    line = ErrorLogFormatter().format(record_at_fixed_time("origin %s refused", "10.0.0.5:8080"))
    assert line == "2026-11-27T03:17:50.123Z warning bastion.net.pool: origin 10.0.0.5:8080 refused"


def test_control_characters_in_a_message_cannot_start_a_forged_line() -> None:
    line = ErrorLogFormatter().format(record_at_fixed_time("bad host %r", "a\nb\x1b"))
    assert "\n" not in line
    assert line.endswith("bad host 'a\\nb\\x1b'")
    line = ErrorLogFormatter().format(record_at_fixed_time("bad host %s", "a\nb"))
    assert line.endswith("bad host a\\x0Ab")


def test_traceback_follows_on_its_own_lines() -> None:
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        record = record_at_fixed_time("hook failed", level=logging.ERROR, exc_info=True)
    lines = ErrorLogFormatter().format(record).splitlines()
    assert lines[0] == "2026-11-27T03:17:50.123Z error bastion.net.pool: hook failed"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ZeroDivisionError: boom"


def test_setup_sends_bastion_messages_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_error_log("info")
    logging.getLogger("bastion.runtime.worker").info("listening on %s", "127.0.0.1:8080")
    match = LINE.fullmatch(capsys.readouterr().err.rstrip("\n"))
    assert match is not None
    assert match.groups() == ("info", "bastion.runtime.worker", "listening on 127.0.0.1:8080")


def test_setup_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_error_log("info")
    setup_error_log("INFO")
    logging.getLogger("bastion.test").warning("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_level_filters_and_a_second_call_changes_it(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("bastion.test")
    setup_error_log("warning")
    log.info("hidden")
    log.error("shown")
    setup_error_log("debug")
    log.debug("now shown")
    messages = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert messages == ["shown", "now shown"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        setup_error_log("verbose")
