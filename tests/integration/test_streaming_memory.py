"""Bodies are streamed with back-pressure and bounded memory, whatever their size.

Bastion runs as a child process so that its resident memory can be read from /proc; the
origin and the client run in the test. Each test warms the path up with a small transfer,
restarts the process's peak-RSS counter, moves a large body, and checks that the peak grew by
less than MEMORY_BUDGET_KIB: a proxy that held the body (or most of it) would grow by about its
size (64 MiB; 16 MiB with the slow origin, which has its own smaller budget).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.support.client import RawClient, RawResponse, request_bytes
from tests.support.origins import AutonomousOrigin, pattern_bytes
from tests.support.proxy import single_route_config
from tests.support.subprocess_proxy import BastionProcess, bastion_process

MIB = 1024 * 1024
BIG = 64 * MIB
MEMORY_BUDGET_KIB = 24 * 1024
"""Peak RSS growth allowed while moving a 64 MiB body (a streaming proxy needs ~1-2 MiB)."""
SLOW_ORIGIN_BUDGET_KIB = 6 * 1024
"""The same for a 16 MiB upload to a slow origin (part of the body fits in socket buffers)."""
PIECE = 65_519
"""Odd piece size, so that pieces differ and any reordering or loss changes the SHA-256."""
TRANSFER_TIMEOUT = 30.0


def proxy_config(origin: AutonomousOrigin) -> str:
    return single_route_config(
        origin.address,
        server='graceful_timeout = "2s"',
        upstream='timeouts = { connect = "2s", read = "10s" }',
    )


def pattern_sha256(n: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, n, PIECE):
        digest.update(pattern_bytes(min(PIECE, n - offset), offset))
    return digest.hexdigest()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class MemoryWatch:
    """Peak RSS growth of a bastion process from the moment `start()` is called."""

    def __init__(self, bastion: BastionProcess) -> None:
        self.bastion = bastion
        self.baseline_kib = 0

    def start(self) -> None:
        if self.bastion.reset_rss_peak():
            self.baseline_kib = self.bastion.rss_kib()
        else:  # the peak keeps counting from process start: compare with the peak so far
            self.baseline_kib = self.bastion.rss_peak_kib()

    def growth_kib(self) -> int:
        return self.bastion.rss_peak_kib() - self.baseline_kib

    def assert_bounded(self, budget_kib: int = MEMORY_BUDGET_KIB, what: str = "") -> None:
        growth = self.growth_kib()
        assert growth < budget_kib, (
            f"{what}: bastion's peak RSS grew by {growth / 1024:.1f} MiB "
            f"(budget {budget_kib / 1024:.0f} MiB, baseline {self.baseline_kib / 1024:.1f} MiB)"
        )


async def download(port: int, target: str) -> RawResponse:
    async with RawClient(port) as client:
        await client.send(request_bytes("GET", target))
        return await client.read_response(keep_body=False, timeout=TRANSFER_TIMEOUT)


async def send_pattern(client: RawClient, size: int, *, chunked: bool = False) -> None:
    """`size` pattern bytes in PIECE-sized writes, each waiting for the socket to drain."""
    for offset in range(0, size, PIECE):
        piece = pattern_bytes(min(PIECE, size - offset), offset)
        await client.send(chunk(piece) if chunked else piece)
    if chunked:
        await client.send(b"0\r\n\r\n")


async def receive_sha256(client: RawClient, size: int) -> str:
    """Read exactly `size` bytes (no more should come) and return their SHA-256."""
    digest, received = hashlib.sha256(), 0
    while received < size:
        piece = await client.read_some(timeout=TRANSFER_TIMEOUT)
        assert piece, f"tunnel closed after {received} of {size} bytes"
        digest.update(piece)
        received += len(piece)
    return digest.hexdigest()


async def upload(port: int, target: str, size: int, *, chunked: bool) -> RawResponse:
    """POST `size` pattern bytes, streamed with Content-Length or chunked."""
    framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
    async with RawClient(port) as client:
        await client.send(request_bytes("POST", target, headers=[framing]))
        await send_pattern(client, size, chunked=chunked)
        return await client.read_response(timeout=TRANSFER_TIMEOUT)


async def warmed_up_watch(bastion: BastionProcess) -> MemoryWatch:
    """Run a small download and upload through bastion, then start watching its memory."""
    small = 2 * MIB
    assert (await download(bastion.port, f"/bytes?n={small}&chunk={PIECE}")).body_len == small
    assert (await upload(bastion.port, "/upload", small, chunked=True)).status == 200
    watch = MemoryWatch(bastion)
    watch.start()
    return watch


def assert_pattern_body(response: RawResponse, size: int) -> None:
    assert response.status == 200
    assert response.complete
    assert response.body_len == size
    assert response.body_sha256 == pattern_sha256(size)


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_64mib_download_streams_with_bounded_memory(tmp_path: Path, chunked: bool) -> None:
    async with (
        AutonomousOrigin() as origin,
        bastion_process(proxy_config(origin), tmp_path) as bastion,
    ):
        watch = await warmed_up_watch(bastion)
        flag = "&chunked=1" if chunked else ""
        response = await download(bastion.port, f"/bytes?n={BIG}&chunk={PIECE}{flag}")
        assert_pattern_body(response, BIG)
        assert response.framing == ("chunked" if chunked else "content-length")
        watch.assert_bounded(what="64 MiB download")


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_64mib_upload_streams_with_bounded_memory(tmp_path: Path, chunked: bool) -> None:
    async with (
        AutonomousOrigin() as origin,
        bastion_process(proxy_config(origin), tmp_path) as bastion,
    ):
        watch = await warmed_up_watch(bastion)
        response = await upload(bastion.port, "/upload", BIG, chunked=chunked)
        assert response.status == 200
        assert response.json() == {"body_len": BIG, "body_sha256": pattern_sha256(BIG)}
        seen = origin.requests[-1]
        assert seen.body_complete
        if chunked:
            assert seen.header("transfer-encoding") == "chunked"
        else:
            assert seen.header("content-length") == str(BIG)
        watch.assert_bounded(what="64 MiB upload")


@pytest.mark.slow
async def test_client_that_stops_reading_pauses_the_origin_instead_of_buffering(
    tmp_path: Path,
) -> None:
    async with (
        AutonomousOrigin() as origin,
        bastion_process(proxy_config(origin), tmp_path) as bastion,
    ):
        watch = await warmed_up_watch(bastion)
        async with RawClient(bastion.port) as client:
            await client.send(request_bytes("GET", f"/bytes?n={BIG}&chunk={PIECE}"))
            await asyncio.sleep(1.0)  # read nothing: the client's socket buffers fill up
            watch.assert_bounded(what="while the client was not reading")
            response = await client.read_response(keep_body=False, timeout=TRANSFER_TIMEOUT)
        assert_pattern_body(response, BIG)
        watch.assert_bounded(what="slow client download")


@pytest.mark.slow
async def test_slow_origin_reader_slows_the_upload_with_bounded_memory(tmp_path: Path) -> None:
    size = 16 * MIB
    # The origin reads at most 64 KiB per read and sleeps 20 ms after each: ~3 MiB/s.
    async with (
        AutonomousOrigin() as origin,
        bastion_process(proxy_config(origin), tmp_path) as bastion,
    ):
        watch = await warmed_up_watch(bastion)
        response = await upload(bastion.port, "/upload?delay_per_chunk=0.02", size, chunked=False)
        assert response.status == 200
        assert response.json() == {"body_len": size, "body_sha256": pattern_sha256(size)}
        watch.assert_bounded(
            budget_kib=SLOW_ORIGIN_BUDGET_KIB, what="16 MiB upload to a slow origin"
        )


@pytest.mark.slow
async def test_upgraded_tunnel_with_a_client_that_stops_reading_stays_bounded(
    tmp_path: Path,
) -> None:
    """64 MiB through an echo tunnel while the client reads nothing for a second: the tunnel
    must stop reading each side whose peer cannot keep up, not hold the bytes."""
    async with (
        AutonomousOrigin() as origin,
        bastion_process(proxy_config(origin), tmp_path) as bastion,
    ):
        watch = await warmed_up_watch(bastion)
        async with RawClient(bastion.port) as client:
            upgrade = [("Connection", "Upgrade"), ("Upgrade", "echo-proto")]
            await client.send(request_bytes("GET", "/upgrade", headers=upgrade))
            assert (await client.read_response(timeout=5.0)).status == 101
            sending = asyncio.create_task(send_pattern(client, BIG))
            try:
                await asyncio.sleep(1.0)  # nothing read: the echo backs up to our writes
                watch.assert_bounded(what="tunnel while the client was not reading")
                assert not sending.done(), "64 MiB went into the tunnel with nobody reading"
                received_sha256 = await receive_sha256(client, BIG)
                await sending
            finally:
                sending.cancel()
        assert received_sha256 == pattern_sha256(BIG)
        watch.assert_bounded(what="64 MiB through a tunnel")
