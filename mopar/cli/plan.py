"""`mopar plan MODEL`: a partition plan; table on stdout, plan.json on request."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from mopar.cli.checks import plan_constraints
from mopar.cli.console import err, out, progress
from mopar.cli.profile import max_threads as cap_threads
from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile, load_model, parse_input_shape
from mopar.plan import planfile
from mopar.plan.linkmodel import LinkModel
from mopar.plan.planner import Plan
from mopar.plan.planning import plan_model
from mopar.profile.profiler import Profile, profile_model


def run(args: argparse.Namespace) -> int:
    link = load_link(args.link)
    model = load_model(args.model, dict(parse_input_shape(t) for t in args.input_shape))
    profile = load_or_make_profile(model, args.profile, args.threads, args.optimization, args.max_threads)
    result = make_plan(model, profile, args, link)
    shapes = profile.settings.get("input_shapes", {})
    data = planfile.to_json(result, profile.model, profile.tensor_specs, shapes, profile.batch)
    out.print(plan_table(data))
    out.print(predicted_table(data))
    verdict = whole_verdict(data)
    if verdict:
        err.print(verdict)
    if args.output:
        Path(args.output).write_text(json.dumps(data, indent=1) + "\n")
        err.print(f"wrote {args.output}")
    return 0


def whole_verdict(data: dict[str, Any]) -> str | None:
    """What a plan of one whole slice means: no partition pays, under this objective and pricing."""
    if len(data["slices"]) != 1 or data["slices"][0].get("subslices"):
        return None
    better = {"latency": "faster", "slo": "cheaper within the SLO"}.get(data["objective"], "cheaper")
    cores = data["constraints"].get("cores")
    on = f" on {cores} core{'s' if cores != 1 else ''}" if cores else ""
    return (
        f"no partition of {data['model']['name']} is {better} than the model served whole{on} "
        f"(pricing {data['pricing']['name']}): it stays whole"
    )


def load_or_make_profile(
    model: ModelFile, path: str | None, threads: int, optimization: str, max_threads: int | None = 1
) -> Profile:
    """The profile in `path`, or one made now (up to `max_threads`; None: this machine's cores)."""
    if path:
        profile = Profile.load(path)
        if profile.model["sha256"] != model.sha256:
            raise UsageError(f"{path} profiles model sha256 {profile.model['sha256'][:12]}, not {model.path}")
        return profile
    with progress(f"profiling {model.name}") as report:
        return profile_model(
            model, threads=threads, optimization=optimization, progress=report, max_threads=cap_threads(max_threads)
        )


def make_plan(
    model: ModelFile,
    profile: Profile,
    args: argparse.Namespace,
    link: LinkModel | None = None,
    whole_cpus: bool = False,
) -> Plan:
    """The plan the options in `args` ask for; `link` instead of the one `--link` names;
    `whole_cpus` for a run on this machine's cores (`Constraints.whole_cpus`)."""
    constraints = replace(plan_constraints(args), whole_cpus=whole_cpus)
    return plan_model(model, profile, constraints, args.pricing, link or load_link(args.link))


def load_link(path: str | None) -> LinkModel:
    """The link model in `path` (None: the reference one); UsageError when it cannot be read."""
    try:
        return LinkModel.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not a link model from `mopar calibrate` ({error})") from None


def plan_table(data: dict[str, Any]) -> Table:
    batch = data.get("batch")
    sized = f", memory for batches up to {batch['max']} (profiled at {batch['profiled']})" if batch else ""
    table = Table(
        title=f"plan for {data['model']['name']}: objective {data['objective']}, pricing {data['pricing']['name']}"
        + sized
    )
    for column in ("slice", "nodes", "first .. last", "memory MB", "vCPU", "time ms", "sub-slices", "$/M requests"):
        table.add_column(column, justify="left" if column in ("slice", "first .. last", "sub-slices") else "right")
    for s in data["slices"]:
        split = s.get("subslices")
        table.add_row(
            s["id"],
            str(len(s["nodes"])),
            s["nodes"][0] if len(s["nodes"]) == 1 else f"{s['nodes'][0]} .. {s['nodes'][-1]}",
            f"{s['memory_mb']:,}",
            f"{s['cpu']:g}",
            f"{s['latency_ms']:.2f}",
            f"{split['k']} x {split['operators'][0]}" if split else "-",
            f"{s['cost_per_million_usd']:.4f}",
        )
    return table


def predicted_table(data: dict[str, Any]) -> Table:
    ours, whole = data["predicted"], data["predicted"]["whole"]
    table = Table(title="predicted, per request")
    for column in ("", "partitioned", "served whole", "ratio"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("functions", str(ours["functions"]), str(whole["functions"]), "")
    table.add_row("vCPUs", " + ".join(f"{c:g}" for c in ours["cpu"]), " + ".join(f"{c:g}" for c in whole["cpu"]), "")
    table.add_row(
        "latency ms",
        f"{ours['latency_ms']:.2f}",
        f"{whole['latency_ms']:.2f}",
        f"{ours['latency_ms'] / whole['latency_ms']:.3f}x",
    )
    table.add_row(
        "vCPU-seconds",
        f"{ours['vcpu_seconds']:.5f}",
        f"{whole['vcpu_seconds']:.5f}",
        f"{whole['vcpu_seconds'] / ours['vcpu_seconds']:.2f}x less" if ours["vcpu_seconds"] else "",
    )
    table.add_row(
        "GB-seconds",
        f"{ours['gb_seconds']:.5f}",
        f"{whole['gb_seconds']:.5f}",
        f"{whole['gb_seconds'] / ours['gb_seconds']:.2f}x less" if ours["gb_seconds"] else "",
    )
    table.add_row(
        "$ per million",
        f"{ours['cost_per_million_usd']:.4f}",
        f"{whole['cost_per_million_usd']:.4f}",
        f"{data['predicted']['cost_ratio']:.2f}x cheaper",
    )
    table.add_row(
        "resource efficiency",
        f"{ours['resource_efficiency']:.1%}",
        f"{whole['resource_efficiency']:.1%}",
        f"{data['predicted']['resource_efficiency_ratio']:.2f}x",
    )
    limit = data.get("limit")
    if limit:  # every node its own function at its own size: what no partition can beat
        table.add_row(
            "attainable saving",
            f"{limit['plan_saving']:.2f}x",
            f"{limit['saving']:.2f}x at most",
            f"{limit['share_reached']:.0%} reached",
        )
    return table
