"""Test helper: a TCP proxy whose link can be cut and restored, for a hub that loses its database."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.hubs import free_port


class CuttableLink:
    """Listens on `host`:`port` and passes each connection to `target`; `cut()` ends every connection and
    refuses new ones until `restore()`."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.cut_off = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cuttable link", daemon=True)

    def start(self) -> CuttableLink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        return self

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._pass, self.host, self.port)

    async def _pass(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}

    def cut(self) -> None:
        def close_all() -> None:
            self.cut_off = True
            for writer in list(self._writers):
                writer.transport.abort()

        self.loop.call_soon_threadsafe(close_all)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "cut_off", False)

    def stop(self) -> None:
        self.cut()
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _close(self) -> None:
        self._server.close()  # refused from now on, not left in the listen queue
        await self._server.wait_closed()


@contextlib.contextmanager
def cuttable_link(target_host: str, target_port: int, host: str = "127.0.0.1") -> Iterator[CuttableLink]:
    link = CuttableLink(target_host, target_port, host).start()
    try:
        yield link
    finally:
        link.stop()
