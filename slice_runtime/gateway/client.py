"""The gateway's client of its slice workers: `POST /run` and `GET /health/ready` over one
pooled aiohttp session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

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
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def run(self, slice_id: str, request_id: str) -> dict[str, Any]:
        url = f"{self.endpoints[slice_id]}/run"
        timeout = aiohttp.ClientTimeout(total=self.call_timeout)
        try:
            async with self.session.post(url, json={"request_id": request_id}, timeout=timeout) as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    return body  # type: ignore[no-any-return]
                message = f"slice {slice_id} answered {response.status}: {body.get('error', body)}"
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
