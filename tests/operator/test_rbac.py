"""Least privilege, derived: the API requests the operator (Kopf and our client) makes through
a whole lifecycle on both serving paths, as (API group, resource, verb), are exactly what the
chart's ClusterRole grants, and, less what is cluster-scoped, its namespaced Role."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mopar.operator.kube import PARTITIONED_MODELS, SECRETS, SERVICES, USER_AGENT
from tests.support.cluster import MODEL, NS, Cluster, VersionedEmulator, eventually
from tests.support.helm import render

pytestmark = pytest.mark.kmock(cls=VersionedEmulator)
Rule = tuple[str, str, str]  # (apiGroup, resource, verb)
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions"}


def rule_of(method: str, path: str, params: dict[str, str]) -> Rule | None:
    """The RBAC (group, resource, verb) a request needs; None for discovery (granted to everyone
    by system:discovery)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:  # a namespaced resource
        rest = rest[2:]
    resource, named = rest[0], len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    verb = {
        "GET": "get" if named else ("watch" if params.get("watch") in ("true", "1") else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return group, resource, verb


def requested(cluster: Cluster) -> set[Rule]:
    ours = [r for r in list(cluster.api)
            if str(r.headers.get("User-Agent", "")).startswith(("kopf/", USER_AGENT.split("/")[0] + "/"))]  # fmt: skip
    return {rule for r in ours if (rule := rule_of(r.method.value, str(r.url.path), dict(r.params))) is not None}


def granted(kind: str, values: dict[str, Any]) -> set[Rule]:
    roles = [o for o in render(values) if o["kind"] == kind]
    assert roles, f"no {kind} rendered"
    return {(group, resource, verb) for rule in roles[0]["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip


async def _ready(cluster: Cluster, *names: str) -> None:
    async def ready() -> bool:
        for serving in ("knative", "deployment"):
            await cluster.mark_ready(serving)
        models = [await cluster.model(n) for n in names]
        return all(m.get("status", {}).get("phase") == "Ready" for m in models)

    await eventually(ready, what=f"{', '.join(names)} Ready")


@pytest.mark.parametrize("cluster", ["knative-clusterwide"], indirect=True)
async def test_the_charts_rbac_is_what_the_operator_requests(cluster: Cluster) -> None:
    # One model on Knative with the operator's Redis, one on Deployments with a Redis of its own.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "own-redis", "namespace": NS},
              "data": {"url": base64.b64encode(cluster.redis_url.encode()).decode()}}  # fmt: skip
    await cluster.kube.create(SECRETS, NS, secret)
    await cluster.apply_model("kn", {"model": {"storageUri": MODEL}})
    await cluster.apply_model("dep", {"model": {"storageUri": MODEL}, "serving": "deployment",
                                      "transport": {"redisSecretRef": {"name": "own-redis"}}})  # fmt: skip
    for name in ("kn", "dep"):
        await cluster.play_prepare_job(name)
    await _ready(cluster, "kn", "dep")
    # Someone edits what the operator owns; a spec change re-prepares, re-plans and patches
    # every function (their env and autoscaling), and the edits are undone.
    await cluster.kube.patch(SECRETS, NS, "kn-redis", {"data": {"url": "ZWRpdGVk"}})
    await cluster.kube.patch(SERVICES, NS, "dep-gateway", {"spec": {"ports": [{"port": 81, "targetPort": 8080}]}})
    change = {"objective": "latency", "timeoutSeconds": 30, "autoscaling": {"maxScale": 5}}
    for name in ("kn", "dep"):
        await cluster.kube.patch(PARTITIONED_MODELS, NS, name, {"spec": change})
    for name in ("kn", "dep"):
        await eventually(lambda n=name: len(cluster.jobs(n)) == 2, what=f"a second prepare Job of {name}")
        await cluster.play_prepare_job(name)
    await eventually(lambda: cluster.objects("v1/services")["dep-gateway"]["spec"]["ports"][0]["port"] == 80,
                     what="the gateway's Service restored")  # fmt: skip
    await _ready(cluster, "kn", "dep")
    # Each moves to the other path: the objects of the old one are removed.
    for name, serving in (("kn", "deployment"), ("dep", "knative")):
        await cluster.kube.patch(PARTITIONED_MODELS, NS, name, {"spec": {"serving": serving}})
    await eventually(
        lambda: (
            {s["status"].get("serving") for s in cluster.objects("mopar.dev/v1alpha1/partitionedmodels").values()}
            == {"knative", "deployment"}
            and not [d for d in cluster.objects("apps/v1/deployments") if d.startswith("dep-")]
        ),
        what="both moved",
    )
    await _ready(cluster, "kn", "dep")
    for name in ("kn", "dep"):  # one at a time, as the delete test does
        await cluster.kube._request("DELETE", PARTITIONED_MODELS.path(NS, name))
        await eventually(lambda n=name: _gone(cluster, n), what=f"{name} gone")

    used = requested(cluster)
    assert ("", "secrets", "get") in used and ("serving.knative.dev", "services", "delete") in used
    cluster_role = granted("ClusterRole", {})
    assert cluster_role == used, f"granted, never used: {sorted(cluster_role - used)}; used, not granted: " \
                                 f"{sorted(used - cluster_role)}"  # fmt: skip
    namespaced = {r for r in used if r[1] not in CLUSTER_SCOPED}
    assert granted("Role", {"operator": {"watchNamespaces": [NS]}}) == namespaced


async def _gone(cluster: Cluster, name: str) -> bool:
    return await cluster.kube.get(PARTITIONED_MODELS, NS, name) is None
