"""The whole Open Inference Protocol against a real `mopar serve --grpc-port`, spoken by clients we
did not write: tritonclient.grpc (metadata, readiness, raw and typed inference, errors as status
codes) and tritonclient.http on the versioned routes; JSON bodies typed exactly
`application/json`. One serve process (shared memory) for the module."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support import free_port
from tests.support.serving import ServeProcess, gateway_in_flight, stopped, workers_of
from tests.support.slicing import negate_twice, sliced

MODEL = "negate"


@pytest.fixture(scope="module")
def serve(tmp_path_factory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("protocol")
    slices = sliced(negate_twice(directory / f"{MODEL}.onnx"), directory / "slices")
    server = ServeProcess(slices, "--grpc-port", str(grpc_port := free_port()))
    server.grpc_url = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(serve):  # type: ignore[no-untyped-def]
    with triton_grpc.InferenceServerClient(serve.grpc_url) as client:
        yield client


def x_values(batch: int = 1) -> np.ndarray:
    return np.arange(batch * 64, dtype=np.float32).reshape(batch, 64) - 17.25


def test_grpc_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mopar" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata(MODEL, as_json=True)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["1", "64"]}]  # int64 as JSON strings
    assert metadata["outputs"][0]["name"] == "y"


def test_grpc_infer_raw(client) -> None:
    x = x_values()
    inputs = [triton_grpc.InferInput("x", [1, 64], "FP32")]
    inputs[0].set_data_from_numpy(x)
    result = client.infer(MODEL, inputs, request_id="r-1", outputs=[triton_grpc.InferRequestedOutput("y")])
    np.testing.assert_array_equal(result.as_numpy("y"), x)
    response = result.get_response()
    assert response.id == "r-1" and response.model_version == "1" and len(response.raw_output_contents) == 1


def test_grpc_infer_typed_contents_answers_typed(serve) -> None:
    """tritonclient's own stub and messages, with the tensor in `contents.fp32_contents`."""
    x = x_values()
    request = service_pb2.ModelInferRequest(model_name=MODEL, model_version="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(serve.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert not response.raw_output_contents
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [1, 64])
    np.testing.assert_array_equal(np.array(output.contents.fp32_contents, dtype=np.float32), x.reshape(-1))


def test_grpc_calls_beyond_the_limit_get_resource_exhausted_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`--max-connections 2`: two calls held in flight (the workers stopped) fill it; a third is
    refused at once with RESOURCE_EXHAUSTED, and the two finish, right, once the workers go on."""
    slices = sliced(negate_twice(tmp_path / f"{MODEL}.onnx"), tmp_path / "slices")
    serve = ServeProcess(slices, "--grpc-port", str(grpc_port := free_port()), "--max-connections", "2")
    x = x_values()
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(x.tobytes())
    workers = workers_of(slices)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with stopped(workers):
                held = [stub.ModelInfer.future(request, timeout=60) for _ in range(2)]
                deadline = time.monotonic() + 20
                while gateway_in_flight(serve.url, MODEL) < 2:
                    assert time.monotonic() < deadline, "the two calls never reached the gateway"
                    time.sleep(0.05)
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    stub.ModelInfer(request, timeout=30)
                assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() - started < 5
            for call in held:
                output = np.frombuffer(call.result(timeout=60).raw_output_contents[0], dtype=np.float32)
                np.testing.assert_array_equal(output, x.reshape(-1))
    finally:
        serve.stop()


def status_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def test_grpc_errors_are_status_codes_from_the_error_table(client) -> None:
    inputs = [triton_grpc.InferInput("x", [2, 32], "FP32")]
    inputs[0].set_data_from_numpy(x_values().reshape(2, 32))
    code, message = status_of(lambda: client.infer("nope", inputs))
    assert code == "StatusCode.NOT_FOUND" and "'nope' is not served here" in message
    code, message = status_of(lambda: client.get_model_metadata(MODEL, "2"))
    assert code == "StatusCode.NOT_FOUND" and "no version '2'" in message
    code, message = status_of(lambda: client.infer(MODEL, inputs))
    assert code == "StatusCode.INVALID_ARGUMENT" and "shape 2x32, expected 1x64" in message
    wrong = [triton_grpc.InferInput("x", [1, 64], "FP64")]
    wrong[0].set_data_from_numpy(x_values().astype(np.float64))
    code, message = status_of(lambda: client.infer(MODEL, wrong))
    assert code == "StatusCode.INVALID_ARGUMENT" and "dtype float64, expected float32" in message


def test_grpc_output_parameters_not_implemented_are_invalid(client) -> None:
    inputs = [triton_grpc.InferInput("x", [1, 64], "FP32")]
    inputs[0].set_data_from_numpy(x_values())
    outputs = [triton_grpc.InferRequestedOutput("y", class_count=3)]
    code, message = status_of(lambda: client.infer(MODEL, inputs, outputs=outputs))
    assert code == "StatusCode.INVALID_ARGUMENT" and "parameter(s) 'classification' not supported" in message


def test_grpc_raw_contents_of_the_wrong_size_are_invalid(serve) -> None:
    request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[b"\0" * 12])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    with grpc.insecure_channel(serve.grpc_url) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "12 bytes of raw_input_contents, not 64 x 4" in caught.value.details()


def test_http_versioned_routes_with_tritonclient(serve) -> None:
    with triton_http.InferenceServerClient(serve.url.removeprefix("http://")) as client:
        assert client.is_model_ready(MODEL, model_version="1")
        assert client.get_model_metadata(MODEL, model_version="1")["versions"] == ["1"]
        x = x_values()
        inputs = [triton_http.InferInput("x", [1, 64], "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=True)
        result = client.infer(MODEL, inputs, model_version="1")
        np.testing.assert_array_equal(result.as_numpy("y"), x)
        assert result.get_response()["model_version"] == "1"
        with pytest.raises(InferenceServerException, match="no version '7'"):
            client.infer(MODEL, inputs, model_version="7")


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/v2", None),
        ("GET", f"/v2/models/{MODEL}/versions/1", None),
        ("GET", f"/v2/models/{MODEL}/versions/1/ready", None),
        ("GET", "/v2/health/ready", None),
        ("GET", "/v2/models/nope", None),  # an error
        ("POST", f"/v2/models/{MODEL}/versions/1/infer", b'{"inputs": []}'),  # an error
    ],
)
def test_json_bodies_are_exactly_application_json(serve, method: str, path: str, body: bytes | None) -> None:
    request = urllib.request.Request(f"{serve.url}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            headers, payload = response.headers, response.read()
    except urllib.error.HTTPError as error:
        headers, payload = error.headers, error.read()
    assert headers["Content-Type"] == "application/json"
    json.loads(payload)
