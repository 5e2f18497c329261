"""The error log: where bastion's own `logging` messages go, and how a line looks.

`setup_error_log` sends the "bastion" logger tree to stderr, one line per message:

    2026-11-27T03:17:50.123Z warning bastion.net.pool: origin 10.0.0.5:8080 refused ...

Times are UTC with milliseconds. Control characters in a message are written as `\\xHH`, so
text that came from a peer cannot start a forged line; a traceback follows on its own lines.
This module only configures `logging`; it knows nothing of requests or the access log.
"""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "bastion"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_CONTROL_TEXT = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x7F)}


class ErrorLogFormatter(logging.Formatter):
    """`<UTC time with ms>Z <level> <logger>: <message>`, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.isprintable():
            message = message.translate(_CONTROL_TEXT)
        line = f"{self.formatTime(record)} {record.levelname.lower()} {record.name}: {message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second, millis = divmod(round(record.created * 1000), 1000)
        t = time.gmtime(second)
        return (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
        )


class _ErrorLogHandler(logging.Handler):
    """Writes each line to whatever `sys.stderr` is now, like logging's last-resort handler.

    Its type marks it as the handler `setup_error_log` installed.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # logging's contract: report through handleError, never raise
            self.handleError(record)


def setup_error_log(level: str) -> None:
    """Send the "bastion" logger to stderr at `level` ("debug" ... "critical").

    Calling it again only changes the level: it never adds a second handler. Lines go to
    whatever `sys.stderr` is when they are written. Raises ValueError for an unknown level.
    """
    try:
        numeric_level = _LEVELS[level.lower()]
    except KeyError:
        choices = ", ".join(_LEVELS)
        raise ValueError(f"error log level must be one of {choices}, got {level!r}") from None
    bastion_logger = logging.getLogger(LOGGER_NAME)
    bastion_logger.setLevel(numeric_level)
    if any(isinstance(h, _ErrorLogHandler) for h in bastion_logger.handlers):
        return
    handler = _ErrorLogHandler()
    handler.setFormatter(ErrorLogFormatter())
    bastion_logger.addHandler(handler)
