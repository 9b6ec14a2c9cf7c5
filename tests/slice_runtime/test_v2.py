"""The Open Inference Protocol bodies: JSON and binary tensors, and the caller's mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slice_runtime import v2
from slice_runtime.errors import InvalidInput
from slice_runtime.tensors import TensorSpec

SPECS = [TensorSpec("input_ids", "int64", (1, 4)), TensorSpec("pixels", "float32", (1, 2, 2))]


def _inputs() -> dict[str, np.ndarray]:
    return {"input_ids": np.array([[1, 2, 3, 4]], np.int64), "pixels": np.arange(4, dtype=np.float32).reshape(1, 2, 2)}


@pytest.mark.parametrize("binary", [False, True])
def test_requests_round_trip(binary: bool) -> None:
    body, headers = v2.encode_request(_inputs(), binary=binary, request_id="r1")
    parsed = v2.parse_request(body, headers.get(v2.HEADER_LENGTH))
    assert parsed.id == "r1"
    for name, array in _inputs().items():
        assert np.array_equal(parsed.inputs[name], array) and parsed.inputs[name].dtype == array.dtype
    v2.check_inputs(parsed.inputs, SPECS)


def test_nested_json_data_is_accepted() -> None:
    body = json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 2, 2], "datatype": "FP32", "data": [[[0, 1], [2, 3]]]}]}
    )
    assert v2.parse_request(body.encode(), None).inputs["pixels"].shape == (1, 2, 2)


@pytest.mark.parametrize("binary", [False, True])
def test_responses_round_trip_and_honour_requested_outputs(binary: bool) -> None:
    outputs = {"logits": np.array([[0.25, -1.5]], np.float32), "boxes": np.zeros((1, 3, 4), np.float32)}
    specs = [TensorSpec("logits", "float32", (1, 2)), TensorSpec("boxes", "float32", (1, 3, 4))]
    body, headers = v2.encode_request(_inputs(), outputs=["logits"], binary_outputs=binary)
    request = v2.parse_request(body, headers.get(v2.HEADER_LENGTH))
    payload, response_headers = v2.encode_response("m", request, outputs, specs)
    decoded = v2.decode_response(payload, response_headers.get(v2.HEADER_LENGTH))
    assert list(decoded) == ["logits"] and np.array_equal(decoded["logits"], outputs["logits"])
    assert (v2.HEADER_LENGTH in response_headers) == binary
    assert json.loads(payload[: int(response_headers.get(v2.HEADER_LENGTH, len(payload)))])["model_name"] == "m"


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"input_ids": np.zeros((1, 4), np.int64)}, "missing input 'pixels'"),
        ({**_inputs(), "extra": np.zeros(1, np.float32)}, "unknown input 'extra'"),
        ({**_inputs(), "pixels": np.zeros((1, 2, 3), np.float32)}, "shape 1x2x3, expected 1x2x2"),
        ({**_inputs(), "input_ids": np.zeros((1, 4), np.int32)}, "dtype int32, expected int64"),
    ],
)
def test_caller_mistakes_name_the_problem(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        v2.check_inputs(inputs, SPECS)


_BINARY_HEAD = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}'


@pytest.mark.parametrize(
    "body, header, message",
    [
        (b"not json", None, "not valid JSON"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP33", "data": [1, 2]}]}', None, "unknown datatype"),
        (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}', None, "2 values for shape"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}', None, "BYTES"),
        (_BINARY_HEAD + b"1234", str(len(_BINARY_HEAD)), "binary data ends after 4 of 8 bytes"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', "9999", "does not fit"),
    ],
)
def test_malformed_requests_are_invalid_input(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        v2.parse_request(body, header)


def _one(data: str, datatype: str = "FP32", shape: list[int] | None = None) -> np.ndarray:
    shape = shape if shape is not None else [len(json.loads(data.replace("NaN", "0").replace("Infinity", "0")))]
    body = f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'
    return v2.parse_request(body.encode(), None).inputs["x"]


@pytest.mark.parametrize(
    "data, datatype, shape, expected",
    [
        ("[[1, 2], [3, 4]]", "FP32", [2, 2], [[1, 2], [3, 4]]),
        ("[NaN, Infinity, -Infinity]", "FP64", [3], [np.nan, np.inf, -np.inf]),
        ('["NaN", "Infinity", "-Infinity"]', "FP16", [3], [np.nan, np.inf, -np.inf]),  # as the gateway writes them
        ("[true, false, true]", "BOOL", [3], [True, False, True]),
        ("[9223372036854775807, -9223372036854775808]", "INT64", [2], [2**63 - 1, -(2**63)]),
        ("[255, 0]", "UINT8", [2], [255, 0]),
        ("[[], []]", "FP32", [2, 0], np.zeros((2, 0))),
    ],
)
def test_json_data_is_read_exactly(data: str, datatype: str, shape: list[int], expected: object) -> None:
    array = _one(data, datatype, shape)
    np.testing.assert_array_equal(array, np.asarray(expected, dtype=array.dtype).reshape(shape))


@pytest.mark.parametrize(
    "data, datatype, message",
    [
        ("[1, 2,]", "FP32", "not valid JSON|not a list of numbers"),
        ("[[1, 2] [3, 4]]", "FP32", "not valid JSON"),
        ("[1 2]", "FP32", "does not fit|not valid JSON"),
        ("[-]", "INT32", "does not fit"),
        ("[256]", "UINT8", "outside 0..255"),
        ("[9223372036854775808]", "INT64", "does not fit"),
        ("[1" + "0" * 400 + "]", "FP32", "out of range"),
        ("[1.5]", "INT64", "does not fit"),
        ('["one"]', "FP32", "does not fit"),
    ],
)
def test_json_data_that_is_not_numbers_of_the_datatype_is_refused(data: str, datatype: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _one(data, datatype, [1 if data.count(",") == 0 else 2])


def test_large_bodies_outside_data_arrays_are_refused_not_parsed_slowly() -> None:
    head = '{"parameters": {"note": "' + "x" * (2 << 20) + '"}, "inputs": [{"name": "x", "shape": [1], '
    with pytest.raises(InvalidInput, match="at most 1 MiB"):
        v2.parse_request((head + '"datatype": "FP32", "data": [1]}]}').encode(), None)
    with pytest.raises(InvalidInput, match="must hold its tensors as 'data' arrays of numbers"):
        v2.parse_request((head + '"datatype": "FP32", "data": ["' + "y" * (8 << 20) + '"]}]}').encode(), None)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "UINT64", "INT8", "BOOL"])
def test_json_data_read_in_pieces_matches_the_json_reader(monkeypatch: pytest.MonkeyPatch, datatype: str) -> None:
    """Pieces of a few bytes, so every kind of cut is met; each piece read by the fast reader
    where it can and numpy's where it cannot ("NaN" strings), all equal to `json.loads`."""
    from slice_runtime import jsonbody

    monkeypatch.setattr(jsonbody, "PIECE_BYTES", 7)
    rng = np.random.default_rng(3)
    values: list[object] = {
        "FP32": rng.standard_normal(40).astype(np.float32).tolist(),
        "FP64": [*rng.standard_normal(30).tolist(), "NaN", 1e308, -0.0, 5, "Infinity"],
        "INT64": [2**63 - 1, -(2**63), 0, *range(-20, 20)],
        "UINT64": [2**64 - 1, 0, *range(40)],
        "INT8": [127, -128, *range(-20, 20)],
        "BOOL": [True, False, 1, 0, *([True] * 20)],
    }[datatype]
    nested = [values[: len(values) // 2], values[len(values) // 2 :]] if len(values) % 2 == 0 else values
    array = _one(json.dumps(nested), datatype, list(np.shape(np.asarray(nested, dtype=object))))
    expected = np.array([float(v) if isinstance(v, str) else v for v in values], dtype=array.dtype)
    np.testing.assert_array_equal(array.reshape(-1), expected)


@pytest.mark.parametrize(
    "data, datatype", [("[-1, 2]", "UINT64"), ("[1, 2.0]", "INT32"), ("[18446744073709551616, 1]", "UINT64")]
)
def test_integers_that_do_not_fit_are_refused_not_wrapped(data: str, datatype: str) -> None:
    with pytest.raises(InvalidInput, match=datatype):
        _one(data, datatype)


def test_an_id_that_is_not_unicode_comes_back_escaped() -> None:
    """JSON's escapes can spell a lone surrogate, which no UTF-8 encoder writes: it is echoed as
    the escape it came as, not a failure."""
    body = b'{"id": "r\\ud800", "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    request = v2.parse_request(body, None)
    payload, _ = v2.encode_response("m", request, {"y": np.ones(1, np.float32)}, [TensorSpec("y", "float32", (1,))])
    assert json.loads(payload)["id"] == "r\ud800"


def test_json_outputs_are_written_at_their_own_precision_and_read_back_exactly() -> None:
    """float32 0.1 is written `0.1` (not float64's 0.10000000149011612): a shorter body, the same value."""
    outputs = {
        "y": np.array([[0.1, -2.5e-8, 3.4e38]], np.float32),
        "n": np.array([np.nan, 1.5], np.float16),
        "k": np.array([2**63 - 1, -1], np.int64),
        "b": np.array([True, False]),
    }
    specs = [TensorSpec(name, str(array.dtype), array.shape) for name, array in outputs.items()]
    request = v2.parse_request(b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', None)
    payload, headers = v2.encode_response("m", request, outputs, specs)
    assert b'"data":[0.1,' in payload and b'"data":["NaN",1.5]' in payload
    decoded = v2.decode_response(payload, headers.get(v2.HEADER_LENGTH))
    for name, array in outputs.items():
        np.testing.assert_array_equal(decoded[name], array)
        assert decoded[name].dtype == array.dtype
