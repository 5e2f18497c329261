"""Access-log lines (combined and JSON), escaping, and where the lines end up."""

from __future__ import annotations

import calendar
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.observe.access_log import (
    FLUSH_THRESHOLD,
    AccessLog,
    AccessRecord,
    TimestampCache,
    escape_field,
    format_combined,
    format_json,
)

FIXED_SECOND = calendar.timegm((2026, 11, 27, 3, 17, 50, 0, 0, 0))


def served_record(**changes: object) -> AccessRecord:
    record = AccessRecord(
        start_time=FIXED_SECOND + 0.123,
        client_ip="203.0.113.7",
        method="GET",
        target="/index.html?q=1",
        http_version="1.1",
        host="example.com",
        status=200,
        bytes_in=87,
        bytes_out=612,
        referer="https://example.com/",
        user_agent="curl/8.5.0",
        request_id="abc123",
        site="shop",
        route="static",
        upstream="web",
        upstream_server="10.0.0.5:8080",
        upstream_status=200,
        duration=0.0421,
        connect_time=0.0,
        first_byte_time=0.0314,
        flag="ok",
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


class FakeSchedule:
    """Collects deferred callbacks; the test runs them when it wants the flush to happen."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.pending.append(callback)

    def run_all(self) -> None:
        callbacks, self.pending = self.pending, []
        for callback in callbacks:
            callback()


# --- combined format -------------------------------------------------------------------------


def test_combined_line_for_a_served_request() -> None:
    assert format_combined(served_record()) == (
        '203.0.113.7 - - [27/Nov/2026:03:17:50 +0000] "GET /index.html?q=1 HTTP/1.1" 200 612'
        ' "https://example.com/" "curl/8.5.0" rid=abc123 rt=0.042 ut=0.031 us=10.0.0.5:8080'
    )


def test_combined_line_when_no_request_line_and_no_origin_was_reached() -> None:
    record = AccessRecord(start_time=FIXED_SECOND, client_ip="198.51.100.2", duration=0.5)
    assert format_combined(record) == (
        '198.51.100.2 - - [27/Nov/2026:03:17:50 +0000] "-" 0 0 "-" "-" rid=- rt=0.500 ut=- us=-'
    )


def test_combined_writes_http2_as_nginx_does() -> None:
    line = format_combined(served_record(http_version="2"))
    assert '"GET /index.html?q=1 HTTP/2.0"' in line


def test_combined_time_follows_the_second_when_the_stamp_cache_is_reused() -> None:
    stamps = TimestampCache()
    first = format_combined(served_record(start_time=FIXED_SECOND + 0.999), stamps)
    second = format_combined(served_record(start_time=FIXED_SECOND + 1.0), stamps)
    after_midnight = format_combined(served_record(start_time=FIXED_SECOND + 86400), stamps)
    assert "[27/Nov/2026:03:17:50 +0000]" in first
    assert "[27/Nov/2026:03:17:51 +0000]" in second
    assert "[28/Nov/2026:03:17:50 +0000]" in after_midnight


# --- escaping --------------------------------------------------------------------------------


def test_newline_quote_and_backslash_in_user_agent_cannot_forge_a_line() -> None:
    line = format_combined(served_record(user_agent='x"\n1.2.3.4 - - [forged] \\ "GET / HTTP/1.1'))
    assert "\n" not in line
    assert '"x\\x22\\x0A1.2.3.4 - - [forged] \\x5C \\x22GET / HTTP/1.1"' in line


def test_non_ascii_bytes_decoded_as_latin1_are_escaped_byte_by_byte() -> None:
    raw_user_agent = "café/1.0".encode()  # what the client sent
    line = format_combined(served_record(user_agent=raw_user_agent.decode("latin-1")))
    assert '"caf\\xC3\\xA9/1.0"' in line


def test_text_beyond_latin1_is_escaped_as_utf8() -> None:
    assert escape_field("snow☃") == "snow\\xE2\\x98\\x83"


def test_escaping_in_request_line_referer_request_id_and_client_ip() -> None:
    line = format_combined(
        served_record(
            target="/a\tb",
            referer="\x7f",
            request_id="id\rx",
            client_ip="1.2.3.4\n",
        )
    )
    assert line.startswith("1.2.3.4\\x0A - - [")
    assert '"GET /a\\x09b HTTP/1.1"' in line
    assert '"\\x7F"' in line
    assert "rid=id\\x0Dx " in line


@given(
    user_agent=st.text(),
    referer=st.text(),
    target=st.text(),
    request_id=st.text(),
)
def test_any_client_text_gives_one_printable_ascii_line_with_six_quotes(
    user_agent: str, referer: str, target: str, request_id: str
) -> None:
    line = format_combined(
        served_record(user_agent=user_agent, referer=referer, target=target, request_id=request_id)
    )
    assert all(" " <= char <= "~" for char in line)
    assert line.count('"') == 6


# --- JSON format -----------------------------------------------------------------------------


def test_json_line_for_a_served_request() -> None:
    assert format_json(served_record()) == (
        '{"time":"2026-11-27T03:17:50.123Z","client_ip":"203.0.113.7","method":"GET",'
        '"target":"/index.html?q=1","http_version":"1.1","host":"example.com","status":200,'
        '"bytes_in":87,"bytes_out":612,"referer":"https://example.com/",'
        '"user_agent":"curl/8.5.0","request_id":"abc123","site":"shop","route":"static",'
        '"upstream":"web","upstream_server":"10.0.0.5:8080","upstream_status":200,'
        '"duration_ms":42.1,"connect_ms":0.0,"first_byte_ms":31.4,"flag":"ok",'
        '"tls_version":null,"tls_cipher":null,"alpn":null}'
    )


def test_json_writes_null_for_unknown_timings() -> None:
    decoded = json.loads(format_json(served_record(connect_time=None, first_byte_time=None)))
    assert decoded["connect_ms"] is None
    assert decoded["first_byte_ms"] is None


def test_json_escapes_control_and_non_ascii_text_and_round_trips() -> None:
    user_agent = 'a\n"b\\ é\x00☃'
    line = format_json(served_record(user_agent=user_agent))
    assert line.isascii()
    assert "\n" not in line
    assert json.loads(line)["user_agent"] == user_agent


def test_json_millisecond_rounding_carries_into_the_next_second() -> None:
    decoded = json.loads(format_json(served_record(start_time=FIXED_SECOND + 0.9996)))
    assert decoded["time"] == "2026-11-27T03:17:51.000Z"


# --- destinations ----------------------------------------------------------------------------


def test_file_destination_is_created_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_bytes(b"earlier line\n")
    log = AccessLog(str(path), "combined")
    log.write(served_record())
    log.write(served_record(status=404))
    lines = path.read_text().splitlines()
    log.close()
    assert lines[0] == "earlier line"
    assert lines[1] == format_combined(served_record())
    assert lines[2] == format_combined(served_record(status=404))


def test_missing_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new.log"
    log = AccessLog(str(path), "json")
    log.write(served_record())
    log.close()
    assert path.read_text() == format_json(served_record()) + "\n"


def test_reopen_after_rename_sends_new_lines_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    log = AccessLog(str(path), "combined")
    log.write(served_record(request_id="before"))
    path.rename(rotated)
    log.write(served_record(request_id="between"))
    log.reopen()
    log.write(served_record(request_id="after"))
    log.close()
    assert [_request_id(line) for line in rotated.read_text().splitlines()] == [
        "before",
        "between",
    ]
    assert [_request_id(line) for line in path.read_text().splitlines()] == ["after"]


def test_reopen_flushes_buffered_lines_into_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "combined", schedule=FakeSchedule())
    log.write(served_record(request_id="buffered"))
    path.rename(tmp_path / "access.log.1")
    log.reopen()
    log.close()
    assert _request_id((tmp_path / "access.log.1").read_text()) == "buffered"
    assert path.read_text() == ""


def test_reopen_that_cannot_open_keeps_writing_to_the_old_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "combined")
    path.rename(tmp_path / "access.log.1")
    path.mkdir()
    with caplog.at_level(logging.ERROR, logger="bastion.observe.access_log"):
        log.reopen()
    log.write(served_record(request_id="still-logged"))
    log.close()
    assert _request_id((tmp_path / "access.log.1").read_text()) == "still-logged"
    assert "cannot reopen" in caplog.text


def test_off_writes_nothing_and_is_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    log = AccessLog("off", "combined")
    log.write(served_record())
    log.flush()
    log.reopen()
    log.close()
    assert log.enabled is False
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().out == ""


def test_stdout_destination_writes_to_fd_1(capfd: pytest.CaptureFixture[str]) -> None:
    log = AccessLog("stdout", "combined")
    log.write(served_record())
    log.reopen()
    log.write(served_record(status=500))
    log.close()
    assert capfd.readouterr().out.splitlines() == [
        format_combined(served_record()),
        format_combined(served_record(status=500)),
    ]
    assert os.fstat(1)  # close() left fd 1 open


def test_a_directory_as_destination_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        AccessLog(str(tmp_path), "combined")


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="combined"):
        AccessLog(str(tmp_path / "a.log"), "xml")  # type: ignore[arg-type]


def test_closed_log_ignores_writes_and_is_disabled(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "combined")
    assert log.enabled is True
    log.close()
    log.write(served_record())
    log.close()
    assert log.enabled is False
    assert path.read_text() == ""


# --- buffering -------------------------------------------------------------------------------


def test_lines_wait_for_the_scheduled_flush_and_go_out_together(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    schedule = FakeSchedule()
    log = AccessLog(str(path), "combined", schedule=schedule)
    log.write(served_record(request_id="one"))
    log.write(served_record(request_id="two"))
    assert path.read_text() == ""
    assert len(schedule.pending) == 1
    schedule.run_all()
    assert [_request_id(line) for line in path.read_text().splitlines()] == ["one", "two"]
    log.write(served_record(request_id="three"))
    assert len(schedule.pending) == 1
    schedule.run_all()
    log.close()
    assert _request_id(path.read_text().splitlines()[-1]) == "three"


def test_buffer_past_64_kib_is_flushed_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "combined", schedule=FakeSchedule())
    big = served_record(user_agent="u" * 1000)
    line_size = len(format_combined(big)) + 1
    lines_to_cross = FLUSH_THRESHOLD // line_size + 1
    for _ in range(lines_to_cross):
        log.write(big)
    assert path.stat().st_size == lines_to_cross * line_size
    log.close()


def test_close_flushes_buffered_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "json", schedule=FakeSchedule())
    log.write(served_record())
    log.close()
    assert path.read_text() == format_json(served_record()) + "\n"


# --- write errors ----------------------------------------------------------------------------

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


@needs_dev_full
def test_disk_full_drops_lines_logs_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "access.log"
    path.symlink_to("/dev/full")
    log = AccessLog(str(path), "combined")
    with caplog.at_level(logging.WARNING, logger="bastion.observe.access_log"):
        for _ in range(3):
            log.write(served_record())
    assert log.dropped_lines == 3
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "write failed" in caplog.records[0].getMessage()
    log.close()


@needs_dev_full
def test_writes_resume_after_the_file_is_usable_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "access.log"
    path.symlink_to("/dev/full")
    log = AccessLog(str(path), "combined", schedule=FakeSchedule())
    log.write(served_record(request_id="lost"))
    log.flush()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="bastion.observe.access_log"):
        log.reopen()
        log.write(served_record(request_id="kept"))
        log.flush()
    log.close()
    assert log.dropped_lines == 1
    assert _request_id(path.read_text()) == "kept"
    assert "writing again" in caplog.text


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_write_to_a_closed_descriptor_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "combined")
    _close_descriptors_of(path)
    with caplog.at_level(logging.ERROR, logger="bastion.observe.access_log"):
        log.write(served_record())
        log.close()
    assert log.dropped_lines == 1
    assert "write failed" in caplog.text


def _close_descriptors_of(path: Path) -> None:
    """Close this process's descriptors open on `path`, behind the owner's back."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                os.close(int(name))
        except OSError:
            continue


def _request_id(line: str) -> str:
    return line.split(" rid=", 1)[1].split(" ", 1)[0]


def test_stdout_into_a_pipe_is_written_in_whole_lines_within_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Worker processes share stdout: a write into a pipe is atomic only up to PIPE_BUF, so
    # a flush goes in pieces of whole lines no bigger than that and lines never interleave.
    import select

    from bastion.observe import access_log as module

    read_end, write_end = os.pipe()
    monkeypatch.setattr(module, "_STDOUT_FD", write_end)
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes | memoryview) -> int:
        if fd == write_end:
            writes.append(bytes(data))
        return real_write(fd, data)

    flushes: list[Callable[[], None]] = []
    log = AccessLog("stdout", "combined", schedule=flushes.append)
    for index in range(100):
        log.write(served_record(user_agent=f"agent-{index}-" + "x" * 100))
    monkeypatch.setattr(module.os, "write", spy)
    log.flush()
    monkeypatch.undo()
    written = b"".join(writes)
    assert len(written) > 3 * select.PIPE_BUF and len(writes) > 3
    assert all(len(piece) <= select.PIPE_BUF and piece.endswith(b"\n") for piece in writes)
    assert os.read(read_end, 1 << 16) == written
    os.close(read_end)
    os.close(write_end)
