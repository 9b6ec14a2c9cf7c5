"""The gateway's REST API driven by schemathesis from an OpenAPI description of the Open Inference
Protocol (`open_inference_rest.yaml`, written from the specification), against a real
`mopar serve`: requests that fit the schema and requests that break it. No answer is a 5xx,
every answer has a status the description names and a body its schema accepts, and every
body that breaks the schema (to a model that exists) is refused with 400."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.serving import ServeProcess
from tests.support.slicing import negate_twice, sliced

MODEL = "negate"
DESCRIPTION = Path(__file__).with_name("open_inference_rest.yaml")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def served_description() -> dict[str, Any]:
    """The protocol's description with the path parameters narrowed to what this server serves, so
    that most generated requests reach the model (negative cases still name other models)."""
    description = copy.deepcopy(yaml.safe_load(DESCRIPTION.read_text()))
    parameters = description["components"]["parameters"]
    parameters["model_name"]["schema"] = {"type": "string", "enum": [MODEL]}
    parameters["model_version"]["schema"] = {"type": "string", "enum": ["1"]}
    return description


SCHEMA = schemathesis.openapi.from_dict(served_description())
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("openapi")
    server = ServeProcess(sliced(negate_twice(directory / f"{MODEL}.onnx"), directory / "slices"))
    yield server
    server.stop()


def test_the_description_is_valid_openapi() -> None:
    SCHEMA.validate()
    assert {op.ok().path for op in SCHEMA.get_all_operations()} >= {"/v2/models/{model_name}/infer", "/v2"}


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_gateway_answers_by_the_description(case: schemathesis.Case, serve: ServeProcess) -> None:
    response = case.call(base_url=serve.url)
    case.validate_response(response, checks=CHECKS)
    components = case.meta.components if case.meta is not None else {}
    modes = {location: component.mode for location, component in components.items()}
    path_ok = modes.get(ParameterLocation.PATH, GenerationMode.POSITIVE) is GenerationMode.POSITIVE
    if modes.get(ParameterLocation.BODY) is GenerationMode.NEGATIVE and path_ok:
        assert response.status_code == 400, (case.body, response.text)


def test_a_request_the_model_takes_answers_by_the_description(serve: ServeProcess) -> None:
    """Generated requests rarely fit the model (x, FP32 [1, 64]); this one does, for the 200's schema."""
    operation = SCHEMA["/v2/models/{model_name}/infer"]["POST"]
    body = {"id": "r-1", "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    case = operation.Case(path_parameters={"model_name": MODEL}, body=body)
    response = case.call(base_url=serve.url)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [0.5] * 64
