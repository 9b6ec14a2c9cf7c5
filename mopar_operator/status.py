"""A PartitionedModel's status: phase, conditions and the figures users read (pure).

Conditions follow the Kubernetes convention: `type`, `status` ("True", "False",
"Unknown"), `reason`, `message`, `lastTransitionTime` (kept while the status stays the
same). The five types, in the order the flow sets them: Profiled, Planned, Sliced,
Deployed, Ready.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

CONDITIONS = ("Profiled", "Planned", "Sliced", "Deployed", "Ready")
PREPARED = ("Profiled", "Planned", "Sliced")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def with_conditions(
    existing: Sequence[Mapping[str, Any]] | None, updates: Mapping[str, tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """`existing` with `updates` ({type: (status, reason, message)}) applied, all five types present."""
    at = now()
    current = {c["type"]: dict(c) for c in existing or [] if "type" in c}
    result = []
    for kind in CONDITIONS:
        previous = current.get(
            kind, {"type": kind, "status": "Unknown", "reason": "Pending", "message": "", "lastTransitionTime": at}
        )
        if kind in updates:
            state, reason, message = updates[kind]
            changed = previous.get("status") != state
            previous = {
                "type": kind,
                "status": state,
                "reason": reason,
                "message": message,
                "lastTransitionTime": at if changed else previous.get("lastTransitionTime", at),
            }
        result.append(previous)
    return result


def condition(status: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in (status or {}).get("conditions", []) or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def slices_status(manifest: Mapping[str, Any], ready: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One entry per slice function: its nodes, its memory, its sub-slice count, ready replicas."""
    plan = {s["id"]: s for s in manifest.get("plan", {}).get("slices", [])}
    rows = []
    for entry in manifest["slices"]:
        planned = plan.get(entry.get("group") or entry["id"], {})
        rows.append(
            {
                "name": entry["id"],
                "nodes": len(planned.get("nodes", [])),
                "memoryMiB": int(entry.get("memory_mb") or planned.get("memory_mb") or 0),
                "subslices": int((planned.get("subslices") or {}).get("k", 1)),
                "readyReplicas": int((ready or {}).get(entry["id"], 0)),
            }
        )
    return rows


def predicted(manifest: Mapping[str, Any]) -> dict[str, Any]:
    figures = manifest.get("plan", {}).get("predicted", {})
    whole = figures.get("whole", {})
    return {
        "latencyMs": figures.get("latency_ms"),
        "costPerMillionUsd": figures.get("cost_per_million_usd"),
        "resourceEfficiency": figures.get("resource_efficiency"),
        "wholeLatencyMs": whole.get("latency_ms"),
        "wholeCostPerMillionUsd": whole.get("cost_per_million_usd"),
        "costRatio": figures.get("cost_ratio"),
        "pricing": manifest.get("plan", {}).get("pricing", {}).get("name"),
    }
