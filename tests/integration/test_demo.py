"""The README's demo: bastion in front of the bundled origin, as a newcomer runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "run.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_shows_the_headers_the_origin_received() -> None:
    port = _free_port()
    result = subprocess.run(
        [sys.executable, str(DEMO), "--port", str(port), "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "GET /hello?x=1 HTTP/1.1" in out  # mounted under /app with strip_prefix
    assert "x-forwarded-for: 127.0.0.1" in out  # the spoofed 6.6.6.6 was replaced
    assert "6.6.6.6" not in out.split("The demo origin received:")[1]
    assert "x-forwarded-prefix: /app" in out
    assert "via: 1.1 bastion" in out
    assert "Traceback" not in result.stderr
