"""The Dockerfile, read as a document (no engine runs here): it starts what the chart and the
operator start, as the user and with the paths they expect, built the reproducible way."""

from __future__ import annotations

import json
import re

import yaml

from mopar.cli.main import build_parser
from mopar.operator.jobs import build_prepare_job
from mopar.operator.pods import PORT
from mopar.operator.serving import build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import KNATIVE, parse
from mopar.operator.units import SliceUnit
from tests.support import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
STAGES = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def _instructions(stage: str, keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :].strip() for line in stage.splitlines() if line.startswith(keyword + " ")]


def test_two_stages_slim_base_and_no_build_tools_in_the_final_one() -> None:
    assert len(STAGES) == 2
    assert all(stage.startswith("python:3.11-slim") for stage in STAGES)
    final = STAGES[1]
    assert not re.search(r"apt-get|apk add|gcc|build-essential|pip install", final)
    assert "COPY --from=build /opt/mopar /opt/mopar" in final


def test_installs_are_pinned_by_the_projects_own_constraints() -> None:
    build = STAGES[0]
    assert "COPY pyproject.toml constraints.txt" in build
    assert all("-c constraints.txt" in line for line in _instructions(build, "RUN") if "pip install" in line)


def test_entrypoint_and_every_role_the_cluster_runs_exist() -> None:
    assert json.loads(_instructions(STAGES[1], "ENTRYPOINT")[0]) == ["mopar"]
    roles = {"operator", "prepare", "worker", "gateway"}
    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert roles <= set(commands)
    owner = {"name": "m", "namespace": "ns", "uid": "u"}
    spec = parse({"model": {"storageUri": "zoo://lstm"}}, "m")
    settings = OperatorSettings()
    started = {build_prepare_job(owner, spec, settings)["spec"]["template"]["spec"]["containers"][0]["args"][0]}
    units = [SliceUnit("s0", 128)]
    for obj in build_serving(owner, spec, units, KNATIVE, settings):
        started.add(obj["spec"]["template"]["spec"]["containers"][0]["args"][0])
    chart = (ROOT / "charts" / "mopar" / "templates" / "operator.yaml").read_text()
    started.add(re.search(r"args:\s*\n\s*- (\w+)", chart).group(1))  # type: ignore[union-attr]
    assert started == roles


def test_runs_as_the_user_the_chart_and_operator_expect_with_tmp_for_writes() -> None:
    final = STAGES[1]
    assert _instructions(final, "USER") == ["10001:10001"]
    assert "--uid 10001" in final and "--gid 10001" in final
    assert "MOPAR_CACHE_DIR=/tmp/mopar-cache" in final and "PYTHONDONTWRITEBYTECODE=1" in final
    owner = {"name": "m", "namespace": "ns", "uid": "u"}
    pod = build_serving(
        owner,
        parse({"model": {"storageUri": "zoo://lstm"}}, "m"),
        [SliceUnit("s0", 128)],
        KNATIVE,
        OperatorSettings(),
    )[0]
    spec = pod["spec"]["template"]["spec"]
    assert spec["containers"][0]["securityContext"]["runAsUser"] == 10001  # Knative: the container's own
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]  # read-only root: /tmp
    values = yaml.safe_load((ROOT / "charts" / "mopar" / "values.yaml").read_text())
    exposed = {int(p) for line in _instructions(final, "EXPOSE") for p in line.split()}
    assert {PORT, values["operator"]["metricsPort"], values["operator"]["healthPort"]} <= exposed
