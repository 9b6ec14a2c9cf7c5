"""The gateway's client of its slice workers: `POST /run` (`calls`) and `GET /health/ready`
over one pooled aiohttp session (connections kept alive, one pool per worker)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from slice_runtime import calls
from slice_runtime.gateway.core import SliceCallError
from slice_runtime.probes import SLICE_CHECK_SECONDS


class HttpSlices:
    """Reaches slice workers at their base URLs (one per slice id)."""

    def __init__(self, endpoints: Mapping[str, str], call_timeout: float = 30.0) -> None:
        self.endpoints = dict(endpoints)
        self.call_timeout = call_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), read_bufsize=calls.READ_BUFFER_BYTES
            )
        return self._session

    async def run(self, slice_id: str, call: calls.Call) -> calls.Reply:
        url = f"{self.endpoints[slice_id]}/run"
        timeout = aiohttp.ClientTimeout(total=self.call_timeout)
        body, headers = calls.encode_call(call)
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as response:
                payload = await response.read()
                if response.status == 200:
                    return calls.decode_reply(payload, response.headers.get(calls.HEADER_LENGTH))
                try:
                    error = json.loads(payload).get("error", payload[:200])
                except (ValueError, AttributeError):
                    error = payload[:200]
                message = f"slice {slice_id} answered {response.status}: {error}"
                raise SliceCallError(message, retryable=response.status >= 500)
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            raise SliceCallError(f"slice {slice_id} at {url}: {type(error).__name__} {error}".strip(), True) from None

    async def ready(self, slice_id: str) -> bool:
        try:
            async with self.session.get(
                f"{self.endpoints[slice_id]}/health/ready", timeout=aiohttp.ClientTimeout(total=SLICE_CHECK_SECONDS)
            ) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
