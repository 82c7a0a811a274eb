"""Worker hosts for real: network namespaces, each joined to this one by a veth pair, whose
link a test can cut while the host's processes run on.

Host ``i`` is the namespace ``usher-<run>-h<i>``; its side of the pair has 10.213.<i>.2/30,
this namespace's side 10.213.<i>.1/30 (addresses private to the test, made and removed by
it). Postgres and the broker listen on 127.0.0.1 only, so a small TCP proxy in this process
listens on 10.213.<i>.1 at each of their ports and forwards to 127.0.0.1: a host reaches
both through its link and nothing else, and ``cut`` (the link down) leaves its processes
running with every connection stalled, as a partitioned host's are; ``restore`` brings the
link back and the stalled connections resume.

Needs root and ``ip``; ``unavailable`` says why not, for a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from app import config
from app.cli.processes import Pool

SUBNET = "10.213"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaced hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"usher-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"`ip netns add` fails here: {error}"
    _ip("netns", "del", probe)
    return None


class Proxy:
    """TCP forwarders in one event loop on a thread of this process: (address, port) ->
    127.0.0.1:port (or 127.0.0.1:to)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="netns-proxy", daemon=True
        )
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def listen(self, address: str, port: int, to: int | None = None) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._pipe(to or port), address, port)

        self.servers.append(asyncio.run_coroutine_threadsafe(start(), self.loop).result(10))

    def _pipe(self, port: int):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return

            async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                except (ConnectionError, OSError):
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        dst.close()

            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

        return handle

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
                await server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Host:
    name: str  # the namespace
    index: int
    outer: str  # this namespace's end of the veth pair
    pool: Pool
    cuts: list[tuple[float, float | None]] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        """Where the host reaches Postgres and the broker (the proxies' address)."""
        return f"{SUBNET}.{self.index}.1"

    def cut(self) -> None:
        """The link down: the host's processes run on, unable to reach anything."""
        _ip("link", "set", self.outer, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outer, "up")


def _through(url: str | None, address: str) -> str | None:
    """``url`` with its host replaced by ``address`` (the port kept)."""
    if url is None:
        return None
    return make_url(url).set(host=address).render_as_string(hide_password=False)


def _port(url: str, default: int) -> int:
    return make_url(url).port or default


@contextlib.contextmanager
def hosts(settings: config.Settings, count: int, log_dir: Path) -> Iterator[list[Host]]:
    """``count`` namespaced hosts, each with an empty Pool whose processes run inside it and
    reach the test's Postgres and broker through its link; all removed afterwards."""
    assert settings.database_url and settings.broker_url, "hosts need a network broker"
    run = uuid.uuid4().hex[:6]
    proxy = Proxy()
    made: list[Host] = []
    try:
        for index in range(1, count + 1):
            name, outer, inner = f"usher-{run}-h{index}", f"uh{run}{index}a", f"uh{run}{index}b"
            _ip("netns", "add", name)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", name)
            _ip("addr", "add", f"{SUBNET}.{index}.1/30", "dev", outer)
            _ip("link", "set", outer, "up")
            for args in (
                ("addr", "add", f"{SUBNET}.{index}.2/30", "dev", inner),
                ("link", "set", inner, "up"),
                ("link", "set", "lo", "up"),
            ):
                _ip("-n", name, *args)
            gateway = f"{SUBNET}.{index}.1"
            proxy.listen(gateway, _port(settings.database_url, 5432))
            proxy.listen(gateway, _port(settings.broker_url, 5672))
            host_settings = settings.model_copy(
                update={
                    "database_url": _through(settings.database_url, gateway),
                    "broker_url": _through(settings.broker_url, gateway),
                }
            )
            pool = Pool(host_settings, log_dir / name, wrap=("ip", "netns", "exec", name))
            made.append(Host(name, index, outer, pool))
        yield made
    finally:
        for host in made:
            with contextlib.suppress(Exception):
                host.restore()
            host.pool.stop_all()
        proxy.close()
        for host in made:
            with contextlib.suppress(Exception):
                _ip("link", "del", host.outer)
            with contextlib.suppress(Exception):
                _ip("netns", "del", host.name)
