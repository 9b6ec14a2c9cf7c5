"""`mopar render`: the objects the operator would create, as one YAML stream, all valid."""

from __future__ import annotations

import json

import yaml

from mopar.operator.units import units_from_plan
from tests.support import ROOT, run_cli
from tests.support.validation import validate_object


def _render(*args: str):  # type: ignore[no-untyped-def]
    done = run_cli("render", *args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_render_plans_a_zoo_model_itself_and_every_object_validates(tmp_path) -> None:
    pm = tmp_path / "pm.yaml"
    pm.write_text(yaml.safe_dump({
        "apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel",
        "metadata": {"name": "tiny", "namespace": "models"},
        "spec": {"model": {"storageUri": "zoo://mobilenetv2?scale=0.25&image=64"}, "autoscaling": {"maxScale": 3}},
    }))  # fmt: skip
    objects = _render(str(pm))
    kinds = [(o["apiVersion"], o["kind"]) for o in objects]
    assert kinds[0] == ("batch/v1", "Job") and ("serving.knative.dev/v1", "Service") in kinds
    for obj in objects:
        validate_object(obj)
        assert obj["metadata"]["namespace"] == "models"
        assert "ownerReferences" not in obj["metadata"]  # not created yet: the operator adopts them


def test_render_from_a_plan_file_and_the_deployment_path(small_model, tmp_path) -> None:
    plan = tmp_path / "plan.json"
    assert run_cli("plan", str(small_model("resnet50")), "--objective", "latency", "--max-slices", "3",
                   "-o", str(plan)).returncode == 0  # fmt: skip
    units = units_from_plan(json.loads(plan.read_text()))
    objects = _render(str(ROOT / "examples" / "bert-deployment.yaml"), "--plan", str(plan))
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == len(units) + 1  # every slice function and the gateway
    assert {o["kind"] for o in objects} == {"Job", "Deployment", "Service", "HorizontalPodAutoscaler"}
    for obj in objects:
        validate_object(obj)


def test_render_refuses_what_it_cannot_reach() -> None:
    done = run_cli("render", str(ROOT / "examples" / "vgg16-slo.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("mopar: error: cannot reach pvc://models/vgg16.onnx")


def test_render_names_a_bad_spec(tmp_path) -> None:
    pm = tmp_path / "bad.yaml"
    pm.write_text("apiVersion: mopar.dev/v1alpha1\nkind: PartitionedModel\nmetadata: {name: x}\n"
                  "spec: {model: {storageUri: zoo://lstm}, objective: slo}\n")  # fmt: skip
    done = run_cli("render", str(pm), "--plan", "unused.json")
    assert done.returncode == 2 and "spec.sloMs" in done.stderr
