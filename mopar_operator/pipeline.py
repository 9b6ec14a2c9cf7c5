"""The flow's steps strung together for a model and its profile: graph, memory model, plan.

Shared by `mopar plan`, `mopar bench`, `mopar demo`, `mopar render` and the prepare Job,
so a plan is made the same way wherever it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from slice_runtime.footprint import measure_peak_rss
from slice_runtime.linkmodel import LinkModel

from . import graph as graphs
from . import planfile
from . import pricing as pricing_tables
from .memory import calibrated
from .modelfile import ModelFile, load_model
from .planner import Constraints, Plan, plan
from .profiling import Profile, profile_model
from .segments import sweep
from .spec import ModelSpec


def plan_model(
    model: ModelFile,
    profile: Profile,
    constraints: Constraints,
    pricing: str = "lambda",
    link: str | None = None,
) -> Plan:
    """The plan for `model` from its profile; the memory model calibrated on the profile's
    measured whole-model peak (see `memory.calibrated`)."""
    baseline = profile.totals.get("runtime_baseline_bytes") or measure_peak_rss(None, profile.machine["threads"])
    graph = graphs.from_model(model.proto, profile)
    whole = next(sweep(graph, 0, [len(graph)]))
    memory = calibrated(int(baseline), profile.totals.get("peak_memory_bytes"), whole)
    return plan(graph, memory, LinkModel.load(link), pricing_tables.load(pricing), constraints)


def plan_spec(
    spec: ModelSpec, path: Path, runs: int = 5, progress: Callable[[str, int, int], None] | None = None
) -> tuple[ModelFile, Profile, dict[str, Any]]:
    """A PartitionedModel's plan for the model at `path` (the prepare Job's and `mopar render`'s
    way): the model (named as the spec serves it), its profile and plan.json."""
    model = replace(load_model(path, spec.input_shapes), name=spec.served_name)
    profile = profile_model(model, runs=runs, threads=spec.runtime.threads, progress=progress)
    constraints = Constraints(
        objective=spec.objective,
        slo_ms=spec.slo_ms,
        max_slices=spec.max_slices,
        min_slice_memory_mb=spec.min_memory_mib,
        max_slice_memory_mb=spec.max_memory_mib,
        split=spec.split,
        max_split=spec.max_split,
    )
    plan = plan_model(model, profile, constraints, spec.pricing)
    shapes = {k: list(v) for k, v in spec.input_shapes.items()}
    return model, profile, planfile.to_json(plan, profile.model, profile.tensor_specs, shapes)


def whole_plan(partitioned: Plan) -> Plan:
    """The same model served as one function (what partitioning is measured against)."""
    p = partitioned
    return Plan(p.graph, p.constraints, p.pricing, p.link, p.memory, [p.whole], p.whole, p.gateway_ms)
