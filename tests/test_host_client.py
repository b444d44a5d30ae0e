"""The client library: PortsClient (sync) and AsyncPortsClient (asyncio)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from copperline.host.client import AsyncPortsClient, PortsClient, PortsConnectionError, PortsError
from copperline.host.ports.testing import DaemonProcess
from tests.support import SHORT, TICK

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def daemon():
    with DaemonProcess() as d:
        yield d


def test_sync_request_events_and_errors(daemon):
    with PortsClient(daemon.path) as c:
        assert c.ping()["protocol"] == 0
        pid = c.request("load", program=TICK)["id"]
        sub = c.subscribe("irq", prog=pid)
        c.request("start", id=pid)
        evs = []
        for ev in c.events(timeout=2.0):
            evs.append(ev)
            if len(evs) == 3:
                break
        assert [e["tag"] for e in evs] == ["tick"] * 3 and {e["sub"] for e in evs} == {sub}
        c.request("stop", id=pid)
        with pytest.raises(PortsError) as e:
            c.request("status", id=pid + 1000)
        assert e.value.code == "NOT_FOUND" and "no program" in e.value.message
        with pytest.raises(PortsError) as e:
            c.request("start")
        assert e.value.code == "BAD_ARG" and e.value.field == "id"
        c.request("unload", id=pid)


def test_sync_events_timeout_ends_iteration(daemon):
    with PortsClient(daemon.path) as c:
        c.subscribe("irq", tag="never")
        assert list(c.events(timeout=0.2)) == []


def test_sync_events_timeout_is_a_total_deadline_and_count_ends_early(daemon):
    """A 1 kHz program never leaves the stream idle: ``timeout`` still ends it (the
    docs' ``for ev in c.events(timeout=1.0)`` loop ends), and so does ``count``."""
    import time
    with PortsClient(daemon.path) as c:
        pid = c.request("load", program=TICK)["id"]
        c.subscribe("irq", prog=pid)
        c.request("start", id=pid)
        t0 = time.monotonic()
        evs = list(c.events(timeout=0.4))
        took = time.monotonic() - t0
        assert 0.35 < took < 3.0 and len(evs) > 50, (took, len(evs))
        assert len(list(c.events(count=3))) == 3
        assert len(list(c.events(count=1000, timeout=0.1))) < 1000
        assert len(list(c.events(idle=0.5, count=2))) == 2
        c.request("unload", id=pid)


def test_async_events_count_and_timeout(daemon):
    async def main():
        async with AsyncPortsClient(daemon.path) as c:
            pid = (await c.request("load", program=TICK))["id"]
            await c.subscribe("irq", prog=pid)
            await c.request("start", id=pid)
            assert len([ev async for ev in c.events(count=3)]) == 3
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            evs = [ev async for ev in c.events(timeout=0.3)]
            assert 0.25 < loop.time() - t0 < 3.0 and evs
            await c.request("unload", id=pid)
    asyncio.run(main())


def test_sync_load_file_passes_a_descriptor(daemon):
    with PortsClient(daemon.path) as c:
        pid = c.load_file(str(EXAMPLES / "tick.json"))
        assert c.request("status", id=pid)["state"] == "loaded"
        c.request("unload", id=pid)


def test_load_file_passes_the_surfaces_next_to_the_program(daemon, tmp_path):
    import shutil
    with PortsClient(daemon.path) as c:
        c.request("unload", id=c.load_file(str(EXAMPLES / "sprite.json")))
        # the daemon reads the file next to the program (here a bad one, so it says)
        shutil.copy(EXAMPLES / "sprite.json", tmp_path / "sprite.json")
        (tmp_path / "sprite.png").write_bytes(b"not a png")
        with pytest.raises(PortsError, match="surface 'sprite.png': not a PNG"):
            c.load_file(str(tmp_path / "sprite.json"))


def test_connection_errors(tmp_path):
    with pytest.raises(PortsConnectionError, match="is copperd running"):
        PortsClient(str(tmp_path / "none.sock"))


def test_async_client_concurrent_requests_and_events(daemon):
    async def main():
        async with AsyncPortsClient(daemon.path) as c:
            pings = await asyncio.gather(*(c.request("ping") for _ in range(20)))
            assert all(p["name"] == "copperd" for p in pings)
            pid = (await c.request("load", program=SHORT))["id"]
            sub = await c.subscribe("irq", "state", prog=pid)
            # a wait runs concurrently with other requests on the same connection
            waiter = asyncio.ensure_future(c.request("wait", id=pid, timeout=5))
            await c.request("start", id=pid)
            kinds = []
            async for ev in c.events():
                assert ev["sub"] == sub
                kinds.append((ev["event"], ev.get("state") or ev.get("tag")))
                if ev["event"] == "state" and ev["state"] == "done":
                    break
            assert kinds == [("state", "running"), ("irq", "end"), ("state", "done")]
            assert (await waiter)["state"] == "done"
            with pytest.raises(PortsError) as e:
                await c.request("unsubscribe", sub=9999)
            assert e.value.code == "NOT_FOUND"
            await c.request("unload", id=pid)
    asyncio.run(main())


def test_async_client_sees_the_daemon_go_away():
    async def main(d):
        c = await AsyncPortsClient.open(d.path)
        await c.request("ping")
        d.stop()
        with pytest.raises(PortsConnectionError):
            await c.next_event(timeout=5)
        with pytest.raises(PortsConnectionError):
            await c.request("ping")
        await c.close()
    d = DaemonProcess().start()
    try:
        asyncio.run(main(d))
    finally:
        d.stop()
