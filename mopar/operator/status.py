"""A PartitionedModel's status: phase, conditions and the figures users read (pure).

Conditions are metav1.Condition entries (k8s.io/apimachinery `pkg/apis/meta/v1/types.go`):
`type`, `status` ("True", "False", "Unknown"), `observedGeneration` (the spec generation the
condition was set for), `lastTransitionTime` (kept while the status stays the same), `reason`
(CamelCase) and `message`. The five types, in the order the flow sets them: Profiled, Planned,
Sliced, Deployed, Ready. The URLs follow Knative and KServe: `url` where clients call the model,
`address.url` its address inside the cluster, and `endpoint` the V2 infer URL.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from mopar.plan import planfile
from slice_runtime import manifest as manifests

CONDITIONS = ("Profiled", "Planned", "Sliced", "Deployed", "Ready")
PREPARED = ("Profiled", "Planned", "Sliced")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def with_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Mapping[str, tuple[str, str, str]],
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """`existing` with `updates` ({type: (status, reason, message)}) applied for spec `generation`,
    all five types present."""
    at = now()
    current = {c["type"]: dict(c) for c in existing or [] if "type" in c}
    result = []
    for kind in CONDITIONS:
        previous = current.get(kind) or _condition(kind, "Unknown", "Pending", "", at, generation)
        if kind in updates:
            state, reason, message = updates[kind]
            changed = previous.get("status") != state
            since = at if changed else previous.get("lastTransitionTime", at)
            previous = _condition(kind, state, reason, message, since, generation)
        result.append(previous)
    return result


def _condition(kind: str, state: str, reason: str, message: str, since: str, generation: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": kind, "status": state}
    if generation is not None:
        entry["observedGeneration"] = generation
    entry.update({"lastTransitionTime": since, "reason": reason, "message": message})
    return entry


def condition(status: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in (status or {}).get("conditions", []) or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def slices_status(manifest: manifests.Manifest, ready: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One entry per slice function: its nodes, its memory, its vCPUs and threads (as planned),
    its sub-slice count, ready replicas."""
    plan = {s.id: s for s in planfile.slices(manifest.plan)} if manifest.plan.get("slices") else {}
    rows = []
    for entry in manifest.slices:
        planned = plan.get(entry.group or entry.id)
        rows.append(
            {
                "name": entry.id,
                "nodes": len(planned.nodes) if planned else 0,
                "memoryMiB": int(entry.memory_mb or (planned.memory_mb if planned else 0)),
                "cpu": entry.cpu if entry.cpu is not None else float(entry.threads),
                "threads": entry.threads,
                "subslices": planned.split.k if planned and planned.split else 1,
                "readyReplicas": int((ready or {}).get(entry.id, 0)),
            }
        )
    return rows


def predicted(manifest: manifests.Manifest) -> dict[str, Any]:
    plan = planfile.summary(manifest.plan)
    figures = plan.predicted
    whole = figures.get("whole", {})
    return {
        "latencyMs": figures.get("latency_ms"),
        "costPerMillionUsd": figures.get("cost_per_million_usd"),
        "resourceEfficiency": figures.get("resource_efficiency"),
        "wholeLatencyMs": whole.get("latency_ms"),
        "wholeCostPerMillionUsd": whole.get("cost_per_million_usd"),
        "costRatio": figures.get("cost_ratio"),
        "pricing": plan.pricing,
    }


def write(
    target: MutableMapping[str, Any],
    current: dict[str, Any],
    phase: str | None,
    observed: int | None,
    conditions: Mapping[str, tuple[str, str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Apply a change to the status `current`: put what differs into `target` (Kopf's
    `patch.status`, sent in one request whether the handler then returns or raises) and
    update `current` to the new status, so later steps of one reconcile build on it.
    `observed` is the generation this change answers (None: the one the status already names)."""
    new = dict(current)
    generation = observed if observed is not None else current.get("observedGeneration")
    new["conditions"] = with_conditions(current.get("conditions"), conditions or {}, generation)
    if phase:
        new["phase"] = phase
    if observed is not None:
        new["observedGeneration"] = observed
    new.update(extra or {})
    for key, value in new.items():
        if current.get(key) != value:
            target[key] = value
    current.clear()
    current.update(new)


def addresses(url: str, cluster_url: str, served_name: str) -> dict[str, Any]:
    """`url`, `address.url` and `endpoint` of a model served at `url` (inside the cluster at
    `cluster_url`)."""
    return {"url": url, "address": {"url": cluster_url}, "endpoint": f"{url}/v2/models/{served_name}/infer"}
