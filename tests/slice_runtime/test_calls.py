"""The control message between gateway and worker (pure): small tensors inside the call."""

from __future__ import annotations

import numpy as np
import pytest

from slice_runtime import calls, codec
from slice_runtime.errors import InvalidInput


def test_a_call_and_its_reply_carry_frames_inside() -> None:
    frames = {"x": codec.encode(np.arange(12, dtype=np.float32)), "mask": codec.encode(np.ones(3, bool))}
    body, headers = calls.encode_call(calls.Call("r1", frames, 4096))
    call = calls.decode_call(body, headers[calls.HEADER_LENGTH])
    assert call.request_id == "r1" and call.inline_limit == 4096 and call.inline == frames
    out = codec.encode(np.full((2, 2), 7, np.int64))
    report = {"request_id": "r1", "slice": "s0", "outputs": {"y": {"inline": len(out)}, "big": {"inline": None}}}
    body, headers = calls.encode_reply(calls.Reply(report, {"y": out}))
    reply = calls.decode_reply(body, headers[calls.HEADER_LENGTH])
    assert reply.report == report and set(reply.inline) == {"y"}
    assert np.array_equal(codec.decode(reply.inline["y"]), np.full((2, 2), 7, np.int64))


def test_a_plain_json_call_has_everything_in_the_store() -> None:
    call = calls.decode_call(b'{"request_id": "abc"}', None)
    assert call.inline == {} and call.inline_limit == 0


@pytest.mark.parametrize(
    ("body", "length", "fragment"),
    [
        (b'{"request_id": "a"}xx', "19", "2 bytes after the last inline frame"),
        (b'{"request_id": "a", "inline": {"x": 5}}ab', None, "not JSON"),
        (b'{"request_id": "a", "inline": {"x": 5}}ab', "39", "runs past the end"),
        (b'{"request_id": "a", "inline": {"x": -1}}', None, "non-negative"),
        (b'{"request_id": "../x"}', None, "request id"),
        (b'{"request_id": 3}', None, "request_id"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"request_id": "a"}', "900", "does not fit"),
        (b'{"request_id": "a"}', "x", "must be an integer"),
        (b'{"request_id": "a", "inline_limit": true}', None, "inline_limit"),
    ],
)
def test_malformed_calls_are_the_callers_mistake(body: bytes, length: str | None, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        calls.decode_call(body, length)


def test_a_malformed_reply_is_no_callers_mistake() -> None:
    with pytest.raises(ValueError, match="runs past the end"):
        calls.decode_reply(b'{"outputs": {"y": {"inline": 10}}}', None)
