"""The flow's steps strung together for a model and its profile: graph, memory model, plan.

Shared by `mopar plan`, `mopar bench`, `mopar demo`, `mopar render` and the prepare Job,
so a plan is made the same way wherever it is made.
"""

from __future__ import annotations

from slice_runtime.footprint import measure_peak_rss
from slice_runtime.linkmodel import LinkModel

from . import graph as graphs
from . import pricing as pricing_tables
from .memory import calibrated
from .modelfile import ModelFile
from .planner import Constraints, Plan, plan
from .profiling import Profile
from .segments import sweep


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


def whole_plan(partitioned: Plan) -> Plan:
    """The same model served as one function (what partitioning is measured against)."""
    p = partitioned
    return Plan(p.graph, p.constraints, p.pricing, p.link, p.memory, [p.whole], p.whole, p.gateway_ms)
