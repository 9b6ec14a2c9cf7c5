"""The control message between the gateway and a slice worker, with small tensors inline (pure).

    POST /run   header {"request_id": R, "inline": {tensor: bytes, ...}, "inline_limit": L}
                + the inline frames, in the header's order
    200         header {"request_id", "slice", "outputs": {tensor: {raw_bytes, wire_bytes,
                codec, inline}}, "timings_ms": {...}} + the frames of outputs marked inline

The JSON header's length travels in the `Mopar-Header-Length` HTTP header (as the V2
binary extension does), so frames are sliced out of the body without copying or escaping
them. A tensor whose frame fits in `inline_limit` bytes travels inside the call, the rest
through the store: a small activation then costs no store round trip, no key and no
deletion, and the gateway holds it only until its last reader has it. A body of plain JSON
`{"request_id": R}` (no header length) is a call whose tensors are all in the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slice_runtime.errors import InvalidInput
from slice_runtime.store.keys import check_request_id

HEADER_LENGTH = "Mopar-Header-Length"
CONTENT_TYPE = "application/octet-stream"
# Frames up to this size travel inside the call by default. Past it a store is faster even on
# one machine: aiohttp moves a body at about 1 GB/s (4 MB: 5.4 ms a call), shared memory and
# Redis on loopback at several; below it the store's extra round trips cost more.
DEFAULT_INLINE_LIMIT = 2**20
# aiohttp reads a body in 64 KiB pieces by default: a 600 KB call then costs 0.8 ms a hop,
# in 1 MiB pieces 0.38 ms. Servers and the gateway's client read this much at a time.
READ_BUFFER_BYTES = 2**20


@dataclass(frozen=True)
class Call:
    request_id: str
    inline: Mapping[str, bytes] = field(default_factory=dict)  # input frames carried in the call
    inline_limit: int = 0  # outputs whose frames fit come back in the reply


@dataclass(frozen=True)
class Reply:
    report: dict[str, Any]  # request_id, slice, outputs (per tensor: raw_bytes, wire_bytes, codec, inline), timings_ms
    inline: Mapping[str, bytes] = field(default_factory=dict)  # output frames carried in the reply


def encode_call(call: Call) -> tuple[bytes, dict[str, str]]:
    header = {
        "request_id": call.request_id,
        "inline": {name: len(frame) for name, frame in call.inline.items()},
        "inline_limit": call.inline_limit,
    }
    return _pack(header, call.inline.values())


def decode_call(body: bytes, header_length: str | None) -> Call:
    """The call in `body`; InvalidInput (a 400) when it is not one."""
    header, length = _header(body, header_length)
    frames = _frames(body, length, header.get("inline", {}))
    request_id = header.get("request_id")
    limit = header.get("inline_limit", 0)
    if not isinstance(request_id, str):
        raise InvalidInput('expected {"request_id": "..."}')
    try:
        check_request_id(request_id)
    except ValueError as error:
        raise InvalidInput(f"request_id: {error}") from None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidInput(f"inline_limit must be a non-negative integer, got {limit!r}")
    return Call(request_id, frames, limit)


def encode_reply(reply: Reply) -> tuple[bytes, dict[str, str]]:
    return _pack(reply.report, reply.inline.values())


def decode_reply(body: bytes, header_length: str | None) -> Reply:
    """The reply in `body` (ValueError when it is not one: the worker's bug, not the caller's)."""
    try:
        report, length = _header(body, header_length)
        outputs = report.get("outputs", {})
        sizes = {name: out["inline"] for name, out in outputs.items() if isinstance(out, dict) and out.get("inline")}
        frames = _frames(body, length, sizes)
    except InvalidInput as error:
        raise ValueError(str(error)) from None
    return Reply(report, frames)


def _pack(header: Mapping[str, Any], frames: Any) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([text, *frames]), {HEADER_LENGTH: str(len(text)), "Content-Type": CONTENT_TYPE}


def _header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], int]:
    """The JSON header at the start of `body`, and its length (the whole body without one)."""
    if header_length is None:
        length = len(body)
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
    try:
        header = json.loads(body[:length])
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(f"the call's header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise InvalidInput("the call's header must be a JSON object")
    return header, length


def _frames(body: bytes, offset: int, sizes: Any) -> dict[str, bytes]:
    """The frames after the header, one per entry of `sizes` ({name: bytes}, in order)."""
    if not isinstance(sizes, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()
    ):
        raise InvalidInput("inline frame sizes must be non-negative integers")
    frames: dict[str, bytes] = {}
    view = memoryview(body)
    for name, size in sizes.items():
        if offset + size > len(body):
            raise InvalidInput(f"inline frame {name!r} of {size} bytes runs past the end of the body")
        frames[str(name)] = bytes(view[offset : offset + size])
        offset += size
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes after the last inline frame")
    return frames
