"""The flow's steps strung together for a model and its profile: graph, memory model, plan.

Shared by `mopar plan`, `mopar bench`, `mopar demo`, `mopar render` and the prepare Job
(`mopar.operator.prepare.plan_spec`), so a plan is made the same way wherever it is made.
"""

from __future__ import annotations

from dataclasses import replace

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile
from mopar.plan import graph as graphs
from mopar.plan import pricing as pricing_tables
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import calibrated
from mopar.plan.planner import Constraints, Plan, plan
from mopar.plan.segments import sweep
from mopar.profile.profiler import Profile
from slice_runtime.footprint import measure_peak_rss


def plan_model(
    model: ModelFile,
    profile: Profile,
    constraints: Constraints,
    pricing: str = pricing_tables.DEFAULT,
    link: str | LinkModel | None = None,
) -> Plan:
    """The plan for `model` from its profile; the memory model calibrated on the profile's
    measured whole-model peak (see `memory.calibrated`) and sized for the largest batch; `link`
    a link model or its file (None: the reference one)."""
    baseline = profile.totals.get("runtime_baseline_bytes") or measure_peak_rss(None, profile.machine["threads"])
    graph = graphs.from_model(model.proto, profile)
    whole = next(sweep(graph, 0, [len(graph)]))
    peak = profile.totals.get("peak_memory_unpacked_bytes") or profile.totals.get("peak_memory_bytes")
    memory = replace(calibrated(int(baseline), peak, whole), batch_scale=batch_scale(profile, constraints))
    links = link if isinstance(link, LinkModel) else LinkModel.load(link)
    return plan(graph, memory, links, pricing_tables.load(pricing), constraints)


def whole_plan(partitioned: Plan) -> Plan:
    """The same model served as one function (what partitioning is measured against)."""
    p = partitioned
    return Plan(p.graph, p.constraints, p.pricing, p.link, p.memory, [p.whole], p.whole, p.gateway_ms)


def batch_scale(profile: Profile, constraints: Constraints) -> float:
    """The largest batch over the profiled one (`memory.MemoryModel.batch_scale`); UsageError for
    a maximum the model cannot take."""
    profiled = int(profile.batch.get("size", 1)) if profile.batch else 1
    wanted = constraints.max_batch or profiled
    if not profile.batch and wanted != 1:
        raise UsageError(f"--max-batch {wanted}: {profile.model['name']} has no symbolic batch dimension")
    if wanted < profiled:
        raise UsageError(f"--max-batch {wanted} is below the batch of {profiled} the model was profiled at")
    return wanted / profiled
