"""`mopar render`: the objects the operator would create, as one plain YAML stream, all valid,
with every object the pods reference and no password."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mopar.operator.units import units_from_plan
from tests.support import ROOT, run_cli
from tests.support.validation import validate_object

TINY = "zoo://mobilenetv2?scale=0.25&image=64"


def _pm(tmp_path: Path, name: str, spec: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel",
                                    "metadata": {"name": name, "namespace": "models"}, "spec": spec}))  # fmt: skip
    return path


def _render(*args: str) -> tuple[str, list[dict[str, Any]]]:
    done = run_cli("render", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout, [d for d in yaml.safe_load_all(done.stdout) if d]


def _referenced(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a pod in `objects` mounts or reads."""
    wanted = set()
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job") or obj["apiVersion"] == "serving.knative.dev/v1":
            pod = obj["spec"]["template"]["spec"]
            wanted |= {("ConfigMap", v["configMap"]["name"]) for v in pod.get("volumes", []) if "configMap" in v}
            wanted |= {("Secret", e["valueFrom"]["secretKeyRef"]["name"]) for c in pod["containers"]
                       for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    return wanted


def test_render_plans_a_zoo_model_itself_with_everything_its_pods_reference(tmp_path: Path) -> None:
    text, objects = _render(str(_pm(tmp_path, "tiny", {"model": {"storageUri": TINY}, "autoscaling": {"maxScale": 3}})))
    kinds = [(o["apiVersion"], o["kind"]) for o in objects]
    assert kinds[:3] == [("v1", "Secret"), ("v1", "ConfigMap"), ("batch/v1", "Job")]
    assert ("serving.knative.dev/v1", "Service") in kinds
    assert _referenced(objects) <= {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        validate_object(obj)
        assert obj["metadata"]["namespace"] == "models"
        assert "ownerReferences" not in obj["metadata"]  # not created yet: the operator adopts them
    secret = objects[0]
    assert "data" not in secret and "stringData" not in secret  # a reference to supply, never a password
    assert "key url" in secret["metadata"]["annotations"]["mopar.dev/supply"]
    manifest = json.loads(objects[1]["data"]["manifest.json"])  # what the slices mount
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["labels"][
        "app.kubernetes.io/component"] == "slice"]  # fmt: skip
    assert len(services) == len(manifest["slices"])
    # Plain YAML: no anchors or aliases, though the builders share label dicts between objects.
    assert "&id" not in text and "*id" not in text


def test_render_from_a_plan_file_on_the_deployment_path_with_an_owner(small_model, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    model = small_model("resnet50")
    assert run_cli("plan", str(model), "--objective", "latency", "--max-slices", "3",
                   "-o", str(plan)).returncode == 0  # fmt: skip
    units = units_from_plan(json.loads(plan.read_text()))
    pm = _pm(tmp_path, "resnet", {"model": {"storageUri": "pvc://models/resnet50.onnx"}, "serving": "deployment",
                                  "objective": "latency", "maxSlices": 3,
                                  "transport": {"redisSecretRef": {"name": "team-redis", "key": "dsn"}}})  # fmt: skip
    uid = "6a1f0d3e-1111-2222-3333-444455556666"
    _, objects = _render(str(pm), "--plan", str(plan), "--model", str(model), "--uid", uid)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == len(units) + 1  # every slice function and the gateway
    assert {o["kind"] for o in objects} == {"Secret", "ConfigMap", "Job", "Deployment", "Service",
                                            "HorizontalPodAutoscaler"}  # fmt: skip
    assert _referenced(objects) <= {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert objects[0]["metadata"]["name"] == "team-redis" and "key dsn" in objects[0]["metadata"]["annotations"][
        "mopar.dev/supply"]  # fmt: skip
    for obj in objects:
        validate_object(obj)
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "mopar.dev/v1alpha1", "kind": "PartitionedModel", "name": "resnet", "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def test_render_takes_a_manifest_as_it_is(small_model, tmp_path: Path) -> None:
    model = small_model("mobilenetv2")
    plan, out = tmp_path / "plan.json", tmp_path / "sliced"
    assert run_cli("plan", str(model), "-o", str(plan)).returncode == 0
    assert run_cli("slice", str(model), "--plan", str(plan), "-o", str(out)).returncode == 0
    pm = _pm(tmp_path, "mobilenet", {"model": {"storageUri": "pvc://models/mobilenet.onnx"}})
    _, objects = _render(str(pm), "--plan", str(out / "manifest.json"))
    mounted = json.loads(next(o for o in objects if o["kind"] == "ConfigMap")["data"]["manifest.json"])
    assert mounted == json.loads((out / "manifest.json").read_text())


def test_render_refuses_what_it_cannot_reach(small_model, tmp_path: Path) -> None:
    pm = _pm(tmp_path, "vgg16", {"model": {"storageUri": "pvc://models/vgg16.onnx"}})
    done = run_cli("render", str(pm))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("mopar: error: cannot reach pvc://models/vgg16.onnx")
    plan = tmp_path / "plan.json"  # a plan, but the manifest is cut from the model it cannot reach
    assert run_cli("plan", str(small_model("mobilenetv2")), "-o", str(plan)).returncode == 0
    done = run_cli("render", str(pm), "--plan", str(plan))
    assert done.returncode == 2 and "give --model FILE or --plan manifest.json" in done.stderr


def test_render_reaches_no_network_unless_asked(tmp_path: Path) -> None:
    # A host that would answer nothing: the refusal comes before any attempt to reach it.
    for uri in ("https://models.invalid/bert.onnx", "s3://mopar-models/bert.onnx"):
        done = run_cli("render", str(_pm(tmp_path, "bert", {"model": {"storageUri": uri}})))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("mopar: error: render reaches no network unless asked") and "--fetch" in last


def test_render_refuses_a_plan_made_for_other_settings(small_model, tmp_path: Path) -> None:
    model = small_model("mobilenetv2")
    plan, out = tmp_path / "plan.json", tmp_path / "sliced"
    assert run_cli("plan", str(model), "--objective", "latency", "--max-slices", "3", "-o", str(plan)).returncode == 0
    assert run_cli("slice", str(model), "--plan", str(plan), "-o", str(out)).returncode == 0
    for spec, field in [
        ({"objective": "slo", "sloMs": 210, "maxSlices": 3}, "spec.objective"),
        ({"objective": "latency", "maxSlices": 6}, "spec.maxSlices"),
        ({"objective": "latency", "maxSlices": 3, "pricing": "knative"}, "spec.pricing"),
    ]:
        pm = _pm(tmp_path, "mobilenet", {"model": {"storageUri": "pvc://models/mobilenet.onnx"}, **spec})
        for given in (out / "manifest.json", plan):
            done = run_cli("render", str(pm), "--plan", str(given), "--model", str(model))
            assert done.returncode == 2, done.stderr
            assert field in done.stderr.strip().splitlines()[-1], done.stderr
    pm = _pm(tmp_path, "mobilenet", {"model": {"storageUri": "pvc://models/mobilenet.onnx"}, "objective": "latency",
                                     "maxSlices": 3})  # fmt: skip
    _render(str(pm), "--plan", str(out / "manifest.json"))


def test_every_example_names_a_model_render_builds_here() -> None:
    # `mopar render examples/X.yaml` runs as it is: every model comes from the zoo, no network.
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(example.read_text()):
            assert document["spec"]["model"]["storageUri"].startswith("zoo://"), example.name


def test_the_zoo_example_renders_as_it_is() -> None:
    _, objects = _render(str(ROOT / "examples" / "resnet50-zoo.yaml"))
    assert any(o["kind"] == "ConfigMap" for o in objects)


def test_render_names_a_bad_spec(tmp_path: Path) -> None:
    pm = tmp_path / "bad.yaml"
    pm.write_text("apiVersion: mopar.dev/v1alpha1\nkind: PartitionedModel\nmetadata: {name: x}\n"
                  "spec: {model: {storageUri: zoo://lstm}, objective: slo}\n")  # fmt: skip
    done = run_cli("render", str(pm), "--plan", "unused.json")
    assert done.returncode == 2 and "spec.sloMs" in done.stderr
