"""A worker's tie to the `mopar serve` that started it: it stops when its supervisor dies.

Linux sends the signal asked for with PR_SET_PDEATHSIG (prctl(2)) when the parent dies;
here SIGTERM, so the worker stops as on any SIGTERM, finishing its runs. Set from inside
the worker (no `preexec_fn`, which is unsafe in a threaded parent), the parent may have
died before the call: so the worker compares its parent with the supervisor's pid right
after, and keeps comparing twice a second where prctl does not exist. The signal comes when
the parent *thread* that started the worker ends: `mopar serve` starts workers from its
event loop's thread, which lives as long as it does.

A worker whose supervisor is gone also clears the model's tensors from the store before it
exits: nobody else is left to.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal

log = logging.getLogger("mopar.worker")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_SECONDS = 0.5


class Supervisor:
    """The process this worker must not outlive (None: not started by `mopar serve`)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    @property
    def gone(self) -> bool:
        return self.pid is not None and os.getppid() != self.pid

    def bind(self) -> bool:
        """Ask for SIGTERM when the parent dies; True if the kernel will send it."""
        if self.pid is None:
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            return bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)
        except (OSError, AttributeError):  # not Linux
            return False

    async def watch(self) -> None:
        """SIGTERM to this process once the supervisor is gone (where prctl cannot)."""
        while not self.gone:
            await asyncio.sleep(POLL_SECONDS)
        log.warning("supervisor %s is gone; stopping", self.pid)
        os.kill(os.getpid(), signal.SIGTERM)
