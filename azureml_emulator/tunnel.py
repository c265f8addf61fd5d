"""A CONNECT proxy to the emulator for clients that hard-code Azure's public ARM host.

promptflow-core's workspace connection provider (the code Prompt flow uses to read a custom
connection from the workspace) builds its URL as `https://management.azure.com{path}` whatever the
cloud (`WorkspaceConnectionProvider.open_url`, promptflow-core 1.18.5). A process that sets
`HTTPS_PROXY` to this proxy reaches the emulator under that name; the emulator's certificate
names `management.azure.com` too, and the client trusts it through its usual CA bundle setting.
Only CONNECT to the hosts in `TUNNELED_HOSTS` on port 443 is accepted: nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib

TUNNELED_HOSTS = frozenset({"management.azure.com"})
_REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def start_tunnel(target_port: int, *, port: int = 0) -> asyncio.Server:
    """Listen on 127.0.0.1:`port` (0: any free port); tunnel allowed CONNECTs to `target_port`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        host, _, target_port_text = rest.split(" ", 1)[0].rpartition(":")
        if method != "CONNECT" or host.lower() not in TUNNELED_HOSTS or target_port_text != "443":
            writer.write(_REFUSED)
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)
