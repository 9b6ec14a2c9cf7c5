"""Monitoring as it runs: Debian's `prometheus` scrapes real workers, gateways and the operator
with the jobs and relabelling the Prometheus Operator makes of the chart's PodMonitor and
ServiceMonitor (tests/support/prometheus_operator.py), evaluates the chart's alert rules, and
answers every dashboard and alert expression: each returns data, or is provably quiet (every
series it reads exists and carries every label it groups by; only its condition is unmet).

The operator deploys one model on Knative, one on Deployments (and refuses a third's spec); the
tests run their pods from the objects it wrote, and give each the discovery labels its pod
would have: Knative's pods carry the template's labels and the user port renamed `user-port`
(knative/serving v1.23.0 revision_helpers.go UserPortName), beside queue-proxy's own ports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from slice_runtime import manifest as manifests
from slice_runtime import v2
from slice_runtime.tensors import random_inputs
from tests.support import ROOT, free_port
from tests.support.cluster import MODEL, NS, Cluster, VersionedEmulator, eventually
from tests.support.helm import ALL_ON, render
from tests.support.pods import PodProcess
from tests.support.prometheus_operator import endpoint_target, pod_monitor_jobs, pod_target, service_monitor_jobs

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)
DASHBOARD = json.loads((ROOT / "charts" / "mopar" / "files" / "dashboard.json").read_text())
GRAFANA = {"$namespace": ".*", "$model": ".*", "$slice": ".*", "$__rate_interval": "1m", "$__range": "5m"}
# Quiet in a healthy run: no errors, no retries, latency under the SLO, the store up.
QUIET = {"MoparSliceErrorRate", "MoparLatencyOverSLO", "MoparGatewayUnavailable", "MoparRedisUnreachable",
         "Errors and retries"}  # fmt: skip


class Prometheus:
    def __init__(self, directory: Path, config: dict[str, Any], rules: dict[str, Any]) -> None:
        if shutil.which("prometheus") is None:
            pytest.fail("prometheus is not on PATH; `make test` installs it (Debian package prometheus)")
        (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
        (directory / "prometheus.yaml").write_text(yaml.safe_dump({**config, "rule_files": ["rules.yaml"]}))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as out:
            command = ["prometheus", f"--config.file={directory / 'prometheus.yaml'}",
                       f"--storage.tsdb.path={directory / 'data'}",
                       f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"]  # fmt: skip
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expression)["result"])

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _pods_of(cluster: Cluster, name: str) -> tuple[str, list[dict[str, Any]]]:
    """The model's functions as the operator wrote them: (serving path, [object])."""
    knative = [s for s in cluster.objects("serving.knative.dev/v1/services").values()
               if s["metadata"]["labels"]["app.kubernetes.io/instance"] == name]  # fmt: skip
    if knative:
        return "knative", knative
    return "deployment", [d for d in cluster.objects("apps/v1/deployments").values()
                          if d["metadata"]["labels"]["app.kubernetes.io/instance"] == name]  # fmt: skip


def _start(cluster: Cluster, name: str, work: Path) -> tuple[list[PodProcess], list[Any]]:
    """Run the model's pods here; the targets discovery would find for them."""
    serving, functions = _pods_of(cluster, name)
    secrets = cluster.objects("v1/secrets")
    mounted = work / name
    mounted.mkdir()
    (mounted / "manifest.json").write_text(cluster.objects("v1/configmaps")[f"{name}-plan"]["data"]["manifest.json"])
    local = {"MOPAR_MANIFEST": str(mounted / "manifest.json"), "MOPAR_CACHE_DIR": str(work / "cache")}
    pods: dict[str, PodProcess] = {}
    for function in sorted(functions, key=lambda f: f["metadata"]["labels"]["app.kubernetes.io/component"] != "slice"):
        container = function["spec"]["template"]["spec"]["containers"][0]
        overrides = {**local, "MOPAR_PORT": str(free_port())}
        if container["name"] == "gateway":  # each slice's Service, here
            urls = dict(
                pair.split("=", 1)
                for pair in next(e["value"] for e in container["env"] if e["name"] == "MOPAR_SLICE_URLS").split(",")
            )
            overrides["MOPAR_SLICE_URLS"] = ",".join(
                f"{sid}={pods[urllib.parse.urlsplit(url).hostname.split('.')[0]].url}" for sid, url in urls.items()
            )
        pods[function["metadata"]["name"]] = PodProcess(container, secrets, overrides,
                                                        work / f"{function['metadata']['name']}.log")  # fmt: skip
    targets = []
    for function_name, pod in pods.items():
        function = next(f for f in functions if f["metadata"]["name"] == function_name)
        labels = function["spec"]["template"]["metadata"]["labels"]
        container, port = pod.container, pod.container["ports"][0]["containerPort"]
        if serving == "knative":
            pod_name = f"{function_name}-00001-deployment-7d9f8-x2x4q"
            labels = {**labels, "serving.knative.dev/service": function_name,
                      "serving.knative.dev/revision": f"{function_name}-00001"}  # fmt: skip
            targets.append(pod_target(pod.url.removeprefix("http://"), NS, pod_name, labels, container["name"],
                                      "user-port", port))  # fmt: skip
            # queue-proxy's own ports are discovered too; the monitor must not pick them.
            dead = f"127.0.0.1:{free_port()}"
            targets.append(pod_target(dead, NS, pod_name, labels, "queue-proxy", "http-usermetric", 9091))
        else:
            targets.append(pod_target(pod.url.removeprefix("http://"), NS, f"{function_name}-6f7c9-k2v8d", labels,
                                      container["name"], container["ports"][0]["name"], port))  # fmt: skip
    return list(pods.values()), targets


def _send(gateway: PodProcess, inputs: list[Any], name: str) -> None:
    body, headers = v2.encode_request(random_inputs(inputs))
    request = urllib.request.Request(f"{gateway.url}/v2/models/{name}/infer", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200


def expressions() -> dict[str, list[str]]:
    """Every expression the chart's dashboard and alert rules evaluate, by panel title or alert."""
    found: dict[str, list[str]] = {}
    for rule in render(ALL_ON):
        if rule["kind"] == "PrometheusRule":
            for group in rule["spec"]["groups"]:
                for alert in group["rules"]:
                    found[alert["alert"]] = [alert["expr"]]
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA.items():
                expr = expr.replace(variable, value)
            found.setdefault(panel["title"], []).append(expr)
    return found


def quiet_because(prometheus: Prometheus, expression: str) -> list[str]:
    """Why `expression` would not be provably quiet: series it reads that are missing, or lack a
    label it groups by ([] when every one exists with every such label). A labelled counter
    nothing has counted yet has no series, only its family in the scrape: then a target of ours
    must export the family (Prometheus keeps the metadata of what it scrapes)."""
    grouped = {label.strip() for clause in re.findall(r"\bby \(([^)]*)\)", expression) for label in clause.split(",")}
    grouped -= {"le", ""}
    problems = []
    for metric in sorted(set(re.findall(r"\bmopar_[a-z0-9_]+\b", expression))):
        series = prometheus.query(metric)
        family = re.sub(r"_(bucket|count|sum)$", "", metric)  # text-format families keep _total
        if not series and not prometheus.api("targets/metadata", metric=family):
            problems.append(f"{metric}: no series, and no target exports {family}")
        for label in grouped:
            if series and not all(s["metric"].get(label) for s in series):
                problems.append(f"{metric}: no label {label}")
    return problems


async def test_prometheus_scrapes_every_target_and_every_query_answers(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.apply_model("kn", {"model": {"storageUri": MODEL}})
    await cluster.apply_model("dep", {"model": {"storageUri": MODEL}, "serving": "deployment"})
    await cluster.apply_model("broken", {"model": {"storageUri": MODEL}, "objective": "slo"})
    for name in ("kn", "dep"):
        await cluster.play_prepare_job(name)
    for name in ("kn", "dep"):
        await eventually(lambda n=name: len(_pods_of(cluster, n)[1]) >= 2, what=f"{name}'s functions")

    pods: list[PodProcess] = []
    targets: list[Any] = []
    prometheus = None
    try:
        for name in ("kn", "dep"):
            started, found = _start(cluster, name, tmp_path)
            pods += started
            targets += found
        for pod in pods:
            await asyncio.to_thread(pod.wait_ready)
        chart = render(ALL_ON)
        monitor = next(o for o in chart if o["kind"] == "PodMonitor")
        service_monitor = next(o for o in chart if o["kind"] == "ServiceMonitor")
        operator_service = next(o for o in chart if o["kind"] == "Service" and o["metadata"]["labels"].get(
            "app.kubernetes.io/component") == "operator")  # fmt: skip
        operator = endpoint_target(f"127.0.0.1:{cluster.metrics_port}", operator_service, "metrics",
                                   "mopar-operator-5c8f7-q9w2e", "operator")  # fmt: skip
        jobs = [*pod_monitor_jobs(monitor, targets, "1s"), *service_monitor_jobs(service_monitor, [operator], "1s")]
        rules = next(o for o in chart if o["kind"] == "PrometheusRule")["spec"]
        prometheus = Prometheus(tmp_path, {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                           "scrape_configs": jobs}, rules)  # fmt: skip
        await eventually(prometheus.up, what="prometheus ready")

        # Every pod and the operator is scraped, once, and nothing else (queue-proxy's ports are not).
        expected = {t.address for t in targets if t.meta["__meta_kubernetes_pod_container_name"] != "queue-proxy"}
        expected.add(operator.address)

        def scraped() -> bool:
            active = prometheus.api("targets", state="active")["activeTargets"]
            return sorted(t["labels"]["instance"] for t in active) == sorted(expected) and all(
                t["health"] == "up" for t in active
            )

        await eventually(scraped, what="every target up")
        gateways = {p.env["MOPAR_MODEL_NAME"]: p for p in pods if p.container["name"] == "gateway"}
        inputs = manifests.loads(Path(pods[0].env["MOPAR_MANIFEST"]).read_text()).inputs

        def traffic() -> bool:  # requests until every rate has two samples in its window
            for name, gateway in gateways.items():
                _send(gateway, inputs, name)
            # Both the slices' and the gateways' series: each process is scraped on its own
            # schedule, and a loaded machine can leave one a scrape behind the other.
            for metric in ("mopar_slice_inference_seconds_count", "mopar_gateway_requests_total"):
                counts = prometheus.query(f"count_over_time({metric}[1m]) >= 3")
                if len({s["metric"]["model"] for s in counts}) < 2:
                    return False
            return True

        await eventually(lambda: asyncio.to_thread(traffic), what="rates over two scrapes", timeout=120)

        answered, quiet = set(), set()
        for title, exprs in expressions().items():
            for expr in exprs:
                if prometheus.query(expr):
                    answered.add(title)
                else:
                    problems = quiet_because(prometheus, expr)
                    assert not problems, f"{title}: {expr} returns nothing and {problems}"
                    quiet.add(title)
        assert quiet - answered == QUIET, f"quiet: {sorted(quiet)}"
        for variable in DASHBOARD["templating"]["list"]:
            if isinstance(variable.get("query"), dict):
                match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
                assert match, variable["query"]["query"]
                selector = match.group(1).replace('=~"$namespace"', '=~".*"').replace('=~"$model"', '=~".*"')
                assert prometheus.api(f"label/{match.group(2)}/values", **{"match[]": selector}), variable["name"]

        # Our labels survive the scrape: the target's namespace is the pod's, no exported_ label.
        series = prometheus.api("series", **{"match[]": '{__name__=~"mopar_.+"}'})
        assert not [s for s in series if any(k.startswith("exported_") for k in s)]
        pod_job = f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"
        assert {s["namespace"] for s in series if s["job"] == pod_job} == {NS}
        assert {s["namespace"] for s in series if s["job"] == operator_service["metadata"]["name"]} == {"mopar-system"}
        assert {s["job"] for s in series if s["__name__"].startswith("mopar_operator")} == {"mopar-operator"}
        firing = prometheus.query('ALERTS{alertname="MoparOperatorReconcileErrors"}')
        assert [(a["metric"]["model_namespace"], a["metric"]["partitionedmodel"]) for a in firing] == [(NS, "broken")]
        groups = prometheus.api("rules")["groups"]
        assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups
    finally:
        if prometheus is not None:
            prometheus.stop()
        for pod in pods:
            pod.stop()


def test_the_monitor_picks_the_user_port_on_both_paths() -> None:
    monitor = next(o for o in render(ALL_ON) if o["kind"] == "PodMonitor")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["user-port", "http1"]
