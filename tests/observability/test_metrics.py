"""Metrics hygiene: every metric the Grafana dashboard and the alert rules query is one a real
worker, gateway or operator exports (scraped over HTTP from running processes)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mopar.model.modelfile import load_model
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
from tests.support.cluster import MODEL, VersionedEmulator
from tests.support.helm import ALL_ON, render

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)
NAME = re.compile(r"\bmopar_[a-z0-9_]+\b")


def queried_metrics() -> set[str]:
    expressions = [r["expr"] for o in render(ALL_ON) if o["kind"] == "PrometheusRule"
                   for g in o["spec"]["groups"] for r in g["rules"]]  # fmt: skip
    dashboard = json.loads((ROOT / "charts" / "mopar" / "files" / "dashboard.json").read_text())
    expressions += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    expressions += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return {name for e in expressions for name in NAME.findall(e)}


def exported(text: str) -> set[str]:
    """Sample names a scrape can hold (a labelled family without children shows only its TYPE)."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "summary": ["_sum", "_count", "_created"]}.get(family.type, [""])  # fmt: skip
        names.update(family.name + suffix for suffix in suffixes)
    return names


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


async def test_dashboard_and_alerts_query_only_exported_metrics(cluster, small_model, tmp_path, monkeypatch) -> None:  # noqa: F811
    # A real worker and gateway: a small model served by `mopar serve`'s machinery, one request sent.
    model = load_model(small_model("mobilenetv2"))
    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    result = plan(graphs.from_model(model.proto, profile), MemoryModel(90 * MB), LinkModel.load(), pricing.LAMBDA,
                  Constraints())  # fmt: skip
    slice_model(model, planfile.to_json(result, profile.model, profile.tensor_specs, {}), tmp_path / "s")
    server = await asyncio.to_thread(ServerThread, LocalServer(tmp_path / "s", transport="shm", port=free_port()))
    try:
        body, headers = v2.encode_request(random_inputs(model.inputs))
        request = urllib.request.Request(f"{server.server.url}/v2/models/mobilenetv2/infer", data=body,
                                         headers=headers, method="POST")  # fmt: skip
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read())
        worker = next(iter(server.server.workers.values()))
        scrapes = [await asyncio.to_thread(scrape, f"{worker.url}/metrics"),
                   await asyncio.to_thread(scrape, f"{server.server.url}/metrics")]  # fmt: skip
    finally:
        await asyncio.to_thread(server.stop)
    # A real operator: the one the fixture runs, with its metrics endpoint, after a reconcile.
    await cluster.apply_model("broken", {"model": {"storageUri": MODEL}, "objective": "slo"})
    scrapes.append(await asyncio.to_thread(scrape, f"http://127.0.0.1:{cluster.metrics_port}/metrics"))

    available = set().union(*(exported(text) for text in scrapes))
    missing = sorted(queried_metrics() - available)
    assert not missing, f"queried but exported by no process: {missing}"
    assert "mopar_operator_reconcile_errors_total" in available


def test_the_queries_name_the_metrics_they_should() -> None:
    queried = queried_metrics()
    for name in (
        "mopar_gateway_request_seconds_bucket",
        "mopar_slice_inference_seconds_bucket",
        "mopar_slice_activation_bytes_total",
        "mopar_store_up",
        "mopar_operator_reconcile_seconds_bucket",
    ):
        assert name in queried  # fmt: skip
