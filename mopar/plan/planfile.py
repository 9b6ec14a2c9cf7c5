"""plan.json: the planner's result as a file the slicer, the operator and people read.

Top level: `format`, `model` (name, sha256), `objective`, `constraints`, `pricing`,
`link`, `memory_model`, `input_shapes`, `tensors` (specs of every tensor crossing a
cut), `slices` in execution order, `predicted` (this plan and the model served whole,
and their ratios; the whole model at its best size for the objective), `graph` and `limit`
(the attainable saving under the pricing table: every node its own function at its own
best size, and the share of it this plan reaches). Each slice: `id`, `nodes`, `inputs`/`outputs`, `memory_mb`,
`need_mb`, `latency_ms`, `compute_ms`, `cost_per_million_usd`, `cpu` (the vCPUs its
functions are given), `threads` (their intra-op threads), `vcpu_seconds`, `codecs` (setting
per output tensor), `prepack` (whether its sessions pre-pack weights) and, when split,
`subslices` (`k`, `operators`, `axis`, `channels`). A model with a symbolic batch adds
`batch`: `profiled` (the batch its figures are for), `max` (the largest a request may carry,
which memory is sized for: `memory_scale` = max / profiled multiplies inputs and
activations), `inputs` and `axes` (each crossing tensor's and model output's batch
dimensions, which the slices keep symbolic).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mopar.errors import UsageError
from mopar.plan.limit import attainable
from slice_runtime import manifest as manifests
from slice_runtime.tensors import TensorSpec

if TYPE_CHECKING:  # only to write one: readers of plan.json need neither the planner nor onnx
    from mopar.plan.planner import Option, Plan

FORMAT = "mopar.plan/v1"


@dataclass(frozen=True)
class Split:
    k: int
    operators: list[str]
    axis: int
    channels: int


@dataclass(frozen=True)
class PlannedSlice:
    id: str
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    memory_mb: int
    split: Split | None
    cpu: float | None = None  # vCPUs of its function (None: a plan of before CPU was planned)
    threads: int = 1  # intra-op threads: the vCPUs rounded up (1 in a plan of before)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlannedSlice:
        sub = data.get("subslices")
        return cls(
            id=str(data["id"]),
            nodes=list(data["nodes"]),
            inputs=list(data["inputs"]),
            outputs=list(data["outputs"]),
            memory_mb=int(data["memory_mb"]),
            split=Split(int(sub["k"]), list(sub["operators"]), int(sub["axis"]), int(sub["channels"])) if sub else None,
            cpu=None if data.get("cpu") is None else float(data["cpu"]),
            threads=int(data.get("threads", 1)),
        )


def to_json(
    plan: Plan,
    model: Mapping[str, Any],
    specs: Mapping[str, TensorSpec],
    input_shapes: Mapping[str, Any],
    batch: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """plan.json of `plan`; `batch` is the profile's (`Profile.batch`) for a model with a symbolic batch."""
    graph = plan.graph
    ours, whole = plan.figures(), plan.figures([plan.whole])
    crossing = {t for option in plan.slices for t in (*option.stats.inputs, *option.stats.outputs)}
    data: dict[str, Any] = {
        "format": FORMAT,
        "model": {"name": model["name"], "sha256": model["sha256"]},
        "objective": plan.constraints.objective,
        "constraints": asdict(plan.constraints),
        "pricing": plan.pricing.to_json(),
        "link": plan.link.to_json(),
        "memory_model": {
            "baseline_bytes": plan.memory.baseline_bytes,
            "activation_factor": plan.memory.activation_factor,
            "batch_scale": plan.memory.batch_scale,
        },
        "input_shapes": dict(input_shapes),
        "tensors": {t: specs[t].to_json() for t in sorted(crossing) if t in specs},
        "slices": [_slice_json(manifests.slice_id(i), option, plan) for i, option in enumerate(plan.slices)],
        "predicted": {
            **ours,
            "whole": whole,
            "cost_ratio": round(whole["cost_per_million_usd"] / max(ours["cost_per_million_usd"], 1e-12), 4),
            "latency_ratio": round(ours["latency_ms"] / max(whole["latency_ms"], 1e-12), 4),
            "resource_efficiency_ratio": round(
                ours["resource_efficiency"] / max(whole["resource_efficiency"], 1e-12), 4
            ),
        },
        "graph": {"nodes": len(graph.nodes)},
        "limit": _limit_json(plan, ours["cost_per_million_usd"], whole["cost_per_million_usd"]),
    }
    if batch:
        named = crossing | set(batch["inputs"]) | set(batch["outputs"])
        data["batch"] = {
            "profiled": batch["size"],
            "max": plan.constraints.max_batch or batch["size"],
            "memory_scale": plan.memory.batch_scale,
            "inputs": list(batch["inputs"]),
            "axes": {t: list(axes) for t, axes in sorted(batch["axes"].items()) if t in named},
        }
    return data


def _limit_json(plan: Plan, cost: float, whole_cost: float) -> dict[str, Any]:
    """The attainable saving under the plan's pricing table (`limit.attainable`) and the share
    of it this plan reaches, against the model whole at its best size."""
    bounds = plan.constraints
    # Within an SLO, the bound holds the same latency budget the plan had.
    budget = bounds.slo_ms - plan.gateway_ms if bounds.objective == "slo" and bounds.slo_ms else None
    bound = attainable(
        plan.graph, plan.memory, plan.pricing, bounds.min_cpu, bounds.cpu_ceiling, bounds.whole_cpus, budget
    )
    saving = whole_cost / max(cost, 1e-15)
    return {
        "cost_per_million_usd": round(bound.usd * 1e6, 6),
        "whole_cost_per_million_usd": round(bound.whole_usd * 1e6, 6),
        "saving": round(bound.saving, 4),
        "plan_saving": round(saving, 4),
        "share_reached": round(bound.share(saving), 4),
    }


def _slice_json(slice_id: str, option: Option, plan: Plan) -> dict[str, Any]:
    stats = option.stats
    nodes = [n.name for n in plan.graph.nodes[stats.start : stats.end]]
    data: dict[str, Any] = {
        "id": slice_id,
        "nodes": nodes,
        "inputs": list(stats.inputs),
        "outputs": list(stats.outputs),
        "memory_mb": option.memory_mb,
        "need_mb": round(option.need_mb, 2),
        "compute_ms": round(stats.compute_ms / option.parts, 4),
        "latency_ms": round(option.latency_ms, 4),
        "duration_ms": round(option.duration_ms, 4),
        "cost_per_million_usd": round(option.cost_usd * 1e6, 6),
        "weight_mb": round(stats.weight_bytes / 2**20, 3),
        "cpu": option.vcpus,
        "threads": option.threads,
        "vcpu_seconds": round(option.vcpu_seconds, 8),
        "codecs": {t: transfer.setting.name for t, transfer in option.writes.items()},
        "prepack": option.prepack,
    }
    if option.parts > 1 and option.group is not None:
        group = option.group
        data["subslices"] = {
            "k": option.parts,
            "operators": [group.operator],
            "axis": group.axis,
            "channels": group.channels,
        }
    return data


def load(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not a mopar plan ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path}: not a mopar plan (expected format {FORMAT!r})")
    return data


def check_model(plan: Mapping[str, Any], sha256: str, where: str) -> None:
    """Refuse a plan made for another model (or another version of this one)."""
    planned = plan["model"]["sha256"]
    if planned != sha256:
        raise UsageError(
            f"{where} was made for model {plan['model']['name']} sha256 {planned[:12]}, "
            f"not this model (sha256 {sha256[:12]}); plan it again"
        )


def slices(plan: Mapping[str, Any]) -> list[PlannedSlice]:
    return [PlannedSlice.from_json(s) for s in plan["slices"]]


@dataclass(frozen=True)
class Summary:
    """What a plan says about itself, for status lines and the operator's conditions."""

    objective: str | None
    pricing: str | None
    nodes: int | None
    slices: int
    predicted: Mapping[str, Any] = field(default_factory=dict)


def summary(plan: Mapping[str, Any]) -> Summary:
    return Summary(
        objective=plan.get("objective"),
        pricing=(plan.get("pricing") or {}).get("name"),
        nodes=(plan.get("graph") or {}).get("nodes"),
        slices=len(plan.get("slices") or []),
        predicted=dict(plan.get("predicted") or {}),
    )
