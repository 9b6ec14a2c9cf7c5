"""What a user of the chart meets besides its objects, each through the Helm engine: the
`helm test` hook (its script run here against a real operator and a real gateway), NOTES.txt
(its URLs answered by a real gateway), the icon, and the CRD upgrade path."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from mopar.model.modelfile import load_model
from mopar.operator.names import gateway_name
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, plan
from mopar.profile.profiler import profile_model
from mopar.slice.slicer import slice_model
from slice_runtime import v2
from slice_runtime.local import LocalServer, free_port
from slice_runtime.tensors import random_inputs
from tests.support import ROOT, ServerThread
from tests.support.cluster import Cluster, VersionedEmulator
from tests.support.helm import CHART, render
from tests.support.validation import validate_object


def _notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name="mopar", namespace="mopar-system", is_install=True)[
            "mopar/templates/NOTES.txt"
        ]


def _hook(values: dict[str, Any]) -> dict[str, Any]:
    return next(o for o in render(values) if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, small_model) -> Any:
    """A real gateway and worker (`mopar serve`'s machinery) serving a small model."""
    directory = tmp_path_factory.mktemp("served")
    model = load_model(small_model("mobilenetv2"))
    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    result = plan(graphs.from_model(model.proto, profile), MemoryModel(90 * MB), LinkModel.load(), pricing.LAMBDA,
                  Constraints())  # fmt: skip
    slice_model(model, planfile.to_json(result, profile.model, profile.tensor_specs, {}), directory)
    server = ServerThread(LocalServer(directory, transport="shm", port=free_port()))
    try:
        yield server.server, model
    finally:
        server.stop()


def test_the_test_hook_checks_the_operator_and_the_named_model() -> None:
    hook = _hook({})
    validate_object(hook)
    env = {e["name"]: e["value"] for e in hook["spec"]["containers"][0]["env"]}
    assert env == {"OPERATOR_URL": "http://mopar-operator.mopar-system.svc:8081/healthz"}
    operator_service = next(o for o in render({}) if o["kind"] == "Service"
                            and o["metadata"]["name"] == "mopar-operator")  # fmt: skip
    assert {"name": "health", "port": 8081, "targetPort": "health", "protocol": "TCP"} in operator_service["spec"][
        "ports"]  # fmt: skip
    # The model's gateway, named as the operator names it, for every kind of name.
    for name, serving in [("resnet50", "knative"), ("bert.base", "deployment"), ("a" * 45, "knative"),
                          ("a-very-long-partitioned-model-name-for-a-transformer", "deployment"),
                          ("b" * 39 + "-" + "c" * 20, "knative")]:  # fmt: skip
        model = {"name": name, "namespace": "models", "serving": serving, "servedName": "bert"}
        env = {e["name"]: e["value"] for e in _hook({"helmTest": {"model": model}})["spec"]["containers"][0]["env"]}
        assert env["MODEL_URL"] == f"http://{gateway_name(name, serving)}.models.svc/v2/models/bert/ready", name
    with pytest.raises(helm.HelmError, match="helmTest.model.namespace"):
        render({"helmTest": {"model": {"name": "resnet50"}}})


@pytest.mark.kmock(cls=VersionedEmulator)
async def test_the_test_hooks_script_passes_and_fails_as_it_should(cluster: Cluster, gateway: Any) -> None:
    server, model = gateway
    script = _hook({})["spec"]["containers"][0]["args"][0]

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script], env={"PATH": os.environ["PATH"], **env},
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    operator = f"http://127.0.0.1:{cluster.health_port}/healthz"
    ready = f"{server.url}/v2/models/{model.name}/ready"
    for env, passes in [({"OPERATOR_URL": operator}, True), ({"OPERATOR_URL": operator, "MODEL_URL": ready}, True),
                        ({"OPERATOR_URL": operator, "MODEL_URL": f"{server.url}/v2/models/nope/ready"}, False),
                        ({"OPERATOR_URL": f"http://127.0.0.1:{free_port()}/healthz"}, False)]:  # fmt: skip
        done = await asyncio.to_thread(run, **env)
        assert (done.returncode == 0) == passes, (env, done.stdout, done.stderr)


def test_the_notes_urls_answer(gateway: Any) -> None:
    server, model = gateway
    notes = _notes({"helmTest": {"model": {"name": "m", "namespace": "models"}}})
    assert "helm test mopar -n mopar-system" in notes and "README" in notes
    assert "kubectl get pm resnet50 -o jsonpath='{.status.url}'" in notes
    paths = re.findall(r"curl -s \$URL(/\S+)", notes)
    assert paths == ["/v2/models/resnet50/ready", "/v2/models/resnet50", "/v2/models/resnet50/infer"]
    body, headers = v2.encode_request(random_inputs(model.inputs))
    for path in paths:
        url = server.url + path.replace("resnet50", model.name)
        request = urllib.request.Request(url, data=body if path.endswith("/infer") else None, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200, path


def test_the_chart_has_an_icon_in_this_repository() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        metadata = chart.metadata
    prefix = "https://raw.githubusercontent.com/mopar-dev/mopar/main/"
    assert metadata["icon"].startswith(prefix) and metadata["home"] == "https://github.com/mopar-dev/mopar"
    icon = ROOT / metadata["icon"].removeprefix(prefix)
    assert icon.suffix == ".svg" and "<svg" in icon.read_text()
    report = helm.lint(str(CHART), strict=True, kube_version="v1.31.0")
    assert not [m for m in report["messages"] if "icon" in m["error"].lower()]


def test_the_readme_gives_the_crd_upgrade_path_helm_will_not_take() -> None:
    readme = (CHART / "README.md").read_text()
    with helm.Chart.load(str(CHART)) as chart:
        crds = chart.crds  # what `helm show crds` prints
        packaged = {f["name"] for f in chart.files}
    assert "README.md" in packaged
    assert [yaml.safe_load(c["data"]) for c in crds] == [yaml.safe_load((ROOT / "crds" / "partitionedmodel.yaml")
                                                                         .read_text())]  # fmt: skip
    assert "helm show crds charts/mopar | kubectl apply --server-side --force-conflicts -f -" in readme
    assert "never upgrades or deletes" in readme and "helm upgrade" in readme
    assert Path(CHART / "crds").is_dir()
