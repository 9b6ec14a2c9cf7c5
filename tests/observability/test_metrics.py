"""Metrics hygiene: the dashboard and the alert rules query the metrics they should (that each
query answers against real processes is tests/observability/test_prometheus.py)."""

from __future__ import annotations

import json
import re

from tests.support import ROOT
from tests.support.helm import ALL_ON, render

NAME = re.compile(r"\bmopar_[a-z0-9_]+\b")


def queried_metrics() -> set[str]:
    expressions = [r["expr"] for o in render(ALL_ON) if o["kind"] == "PrometheusRule"
                   for g in o["spec"]["groups"] for r in g["rules"]]  # fmt: skip
    dashboard = json.loads((ROOT / "charts" / "mopar" / "files" / "dashboard.json").read_text())
    expressions += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    expressions += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return {name for e in expressions for name in NAME.findall(e)}


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
