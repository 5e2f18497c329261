"""Run bastion in front of the demo origin and show what the origin sees.

scripts/demo              # serve until Ctrl-C
scripts/demo --seconds 5  # serve for 5 seconds, then stop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from origin import start_origin

CONFIG = """\
[log]
format = "combined"

[admin]
listen = "127.0.0.1:{admin_port}"

[[listen]]
address = "127.0.0.1:{port}"

[[site]]
hosts = ["*"]

  [[site.route]]
  path = "/old"
  redirect = {{ to = "http://{{host}}/", status = 301 }}

  [[site.route]]
  path = "/app"
  upstream = "demo"
  strip_prefix = true

  [[site.route]]
  path = "/"
  upstream = "demo"

[upstream.demo]
servers = ["http://127.0.0.1:{origin_port}"]
"""


def _fetch(url: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_ready(url: str) -> None:
    for _ in range(100):
        try:
            await asyncio.to_thread(_fetch, url, {})
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit("bastion did not start; see its messages above")


async def main(port: int, seconds: float | None) -> None:
    origin = await start_origin()
    origin_port = origin.sockets[0].getsockname()[1]
    config = Path(tempfile.mkdtemp()) / "demo.toml"
    admin_port = _free_port()
    config.write_text(CONFIG.format(port=port, origin_port=origin_port, admin_port=admin_port))
    proxy = subprocess.Popen([sys.executable, "-m", "bastion.cli", "run", "-c", str(config)])
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base + "/")
        print(f"\nbastion listens on {base} in front of the demo origin (port {origin_port}).")
        print("A client claims to be 6.6.6.6 via X-Forwarded-For; bastion replaces the claim:\n")
        print(
            await asyncio.to_thread(_fetch, base + "/app/hello?x=1", {"X-Forwarded-For": "6.6.6.6"})
        )
        print("Try it yourself:")
        print(f"  curl -i {base}/app/hello     # mounted under /app, the origin sees /hello")
        print(f"  curl -i {base}/old           # a redirect route")
        print(f"  curl -i --path-as-is {base}/../../etc  # 400: the path climbs above the root")
        print(f"\nDashboard: http://127.0.0.1:{admin_port}/  (admin API under /api, metrics")
        print("at /metrics; loopback clients only, as no admin.token is set)")
        print(f"\nConfiguration used: {config}\nCtrl-C stops the demo.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        proxy.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proxy.wait, 10)
        origin.close()
        await asyncio.sleep(0.2)  # let the origin's handlers see bastion's pool close


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("BASTION_DEMO_PORT", "8080"))
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.port, arguments.seconds))
