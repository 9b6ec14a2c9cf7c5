"""The gateway's HTTP server around its app: read timeouts, a connection limit, and the drain.

aiohttp closes a connection that has not sent a whole request's headers within its
keep-alive timeout (the timer runs from the connection's start and from the end of each
response), so that timeout is the header timeout here; the body's deadline is the infer
handler's (`Limits.body_timeout`). Past `max_connections` a new connection gets a 503 and
is closed at once.

The drain (on SIGTERM): readiness turns 503 and new inference requests are answered 503
with `Retry-After` (once their bodies are read, so that the client sees the answer), the
requests in flight finish, those whose headers have arrived are answered, for at most the
grace period (past it they are cancelled and answered 503), then the listener and the idle
connections close.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from slice_runtime import calls, loops
from slice_runtime.errors import SettingError

log = logging.getLogger("mopar.gateway")

RETRY_AFTER_SECONDS = 1
_POLL_SECONDS = 0.05
_QUIET_POLLS = 3
_REFUSAL_BODY = b'{"error": "too many connections to this gateway; retry later"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: %d\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (RETRY_AFTER_SECONDS, len(_REFUSAL_BODY), _REFUSAL_BODY)
)


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the gateway, and how long shutting down may take."""

    header_timeout: float = 15.0  # to send a request's headers (and the idle time between requests)
    body_timeout: float = 60.0  # to send a request's whole body
    max_connections: int = 1024
    grace: float = 30.0  # for the requests in flight when the drain begins


def limits_from(args: argparse.Namespace) -> Limits:
    """The limits `options.add_http_arguments` parsed."""
    return Limits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        grace=args.grace,
    )


class Drain:
    """The inference requests in flight, and whether the server is draining."""

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def enter(self) -> None:
        """Count the current task (an inference request's handler) in flight."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._idle.clear()

    def leave(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait(self, grace: float, begun: Callable[[], int] = lambda: 0) -> int:
        """Begin draining; wait up to `grace` s for the requests in flight and for those whose
        headers have arrived but no handler has taken yet (`begun()` counts them), then cancel
        the rest (their handlers answer 503). Returns how many had to be cancelled."""
        self.draining = True
        try:
            async with asyncio.timeout(grace):
                # A loaded server's loop lags behind its sockets: requests that came before the
                # signal may still be unread. Idle means idle on several polls in a row, each
                # after the loop has read what its sockets hold.
                quiet = 0
                while quiet < _QUIET_POLLS:
                    await self._idle.wait()
                    await asyncio.sleep(_POLL_SECONDS)
                    quiet = quiet + 1 if self._idle.is_set() and not begun() else 0
            return 0
        except TimeoutError:
            self.expired = True
            left = list(self._tasks)
            for task in left:
                task.cancel()
            try:
                await asyncio.wait_for(self._idle.wait(), 5.0)
            except TimeoutError:
                log.warning("%d request(s) did not stop when cancelled", self.in_flight)
            return len(left)


def requests_begun(server: web.Server | None) -> int:
    """How many of `server`'s connections hold a request whose headers were read: parsed and
    waiting for a handler, or in one. aiohttp (3.14) shows this only in its handlers' private
    state; a test of the drain under load fails if that changes."""
    if server is None:  # stopped already
        return 0
    return sum(1 for handler in server.connections if handler._messages or handler._request_in_progress)


class GuardedSite(web.BaseSite):
    """A TCP site that refuses connections beyond `max_connections` with a 503."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, max_connections: int) -> None:
        super().__init__(runner)
        self._host, self._port, self._max = host, port, max_connections

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def connection() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max:
                return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(connection, self._host, self._port)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's is one without subclassing asyncio.Transport).
        cast(asyncio.WriteTransport, transport).write(_REFUSAL)
        transport.close()


def check_port(host: str, port: int) -> None:
    """SettingError, one line naming the port, if this process cannot listen on host:port: said
    before anything slow starts (the listener itself opens last)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener will
            probe.bind(address)
    except OSError as error:
        raise _listen_error(host, port, error) from None


def _listen_error(host: str, port: int, error: OSError) -> SettingError:
    if error.errno == errno.EADDRINUSE:
        return SettingError(f"port {port} on {host} is in use by another program; choose another with --port")
    return SettingError(f"cannot listen on {host}:{port}: {error.strerror or error}")


async def start(app: web.Application, host: str, port: int, limits: Limits, access_log: bool = False) -> web.AppRunner:
    """Serve `app` at host:port within `limits`; returns the runner (`cleanup()` stops it).
    No access log unless asked: a log line per request costs more than the rest of a hop."""
    # lingering_time: after an early answer (413, 408), how long to read and drop what the
    # client still sends, so it sees the answer rather than a reset.
    runner = web.AppRunner(
        app,
        keepalive_timeout=limits.header_timeout,
        lingering_time=2.0,
        shutdown_timeout=5.0,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        read_bufsize=calls.READ_BUFFER_BYTES,
    )
    await runner.setup()
    try:
        await GuardedSite(runner, host, port, limits.max_connections).start()
    except OSError as error:  # taken since it was checked
        await runner.cleanup()
        raise _listen_error(host, port, error) from None
    return runner


async def stop(runner: web.AppRunner, drain: Drain, grace: float) -> None:
    """Drain, then close the listener and every connection."""
    cancelled = await drain.wait(grace, lambda: requests_begun(runner.server))
    if cancelled:
        log.warning("grace period of %g s over: %d request(s) cancelled", grace, cancelled)
    await runner.cleanup()


def until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `run(stop)` in a new event loop, `stop` set by SIGTERM or SIGINT."""

    async def main() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        await run(stop_event)

    loops.install()
    asyncio.run(main())
