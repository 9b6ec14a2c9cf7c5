"""A worker's tie to the `mopar serve` that started it (`--supervisor-pid`).

The supervisor keeps the write end of the worker's stdin; the worker stops when that pipe
closes: the supervisor closes it once its gateway has drained, and the kernel closes it
when the supervisor dies, kill -9 included. Signals do not stop a supervised worker while
its supervisor lives: a terminal's Ctrl-C or a service manager signals every process of
the group or cgroup at once, and a worker that stopped then would fail the requests the
gateway is still finishing.

Belt and braces: PR_SET_PDEATHSIG (prctl(2), Linux) asks for SIGTERM when the parent dies,
and the parent's pid is compared twice a second. Set from inside the worker (no
`preexec_fn`, which is unsafe in a threaded parent); the signal comes when the parent
*thread* ends, and `mopar serve` starts workers from its event loop's thread, which lives as
long as it does.

A worker whose supervisor is gone clears the model's tensors from the store before it
exits: nobody else is left to.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger("mopar.worker")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_SECONDS = 0.5
# What the supervisor writes before it closes the pipe on an orderly stop. The kernel closes a
# dead process's files before it re-parents its children, so a worker can see the pipe close
# while its parent's pid is still the old one: the pipe closing without this word means the
# supervisor died.
STOP_WORD = b"stop\n"


class Supervisor:
    """The process this worker must not outlive (pid None: not started by `mopar serve`)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.dismissed = False  # the supervisor said stop before it closed the pipe
        self.closed = False  # the pipe is closed

    @property
    def gone(self) -> bool:
        """The supervisor died (rather than stopping this worker in order)."""
        if self.pid is None:
            return False
        return os.getppid() != self.pid or (self.closed and not self.dismissed)

    def bind(self) -> bool:
        """Ask for SIGTERM when the parent dies; True if the kernel will send it."""
        if self.pid is None:
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            return bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)
        except (OSError, AttributeError):  # not Linux
            return False

    async def released(self) -> None:
        """Return once the supervisor closed this worker's stdin or is gone."""
        closed = asyncio.Event()
        supervisor = self

        class _Eof(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                if STOP_WORD.strip() in data:
                    supervisor.dismissed = True

            def connection_lost(self, exc: Exception | None) -> None:
                supervisor.closed = True
                closed.set()

        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_read_pipe(_Eof, sys.stdin)
        except (OSError, ValueError):  # stdin is no pipe: rely on the pid alone
            transport = None
        try:
            while not closed.is_set() and not self.gone:
                try:
                    await asyncio.wait_for(closed.wait(), POLL_SECONDS)
                except TimeoutError:
                    pass
        finally:
            if transport is not None:
                transport.close()
        if self.gone:
            log.warning("supervisor %s is gone; stopping", self.pid)
