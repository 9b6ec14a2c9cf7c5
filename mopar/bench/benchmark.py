"""`mopar bench MODEL`: the peer, the model served whole and partitioned, same machine, same run.

Three servings are up at once and take turns, request by request (peer, whole, partitioned,
peer, ...), so the machine's drift hits all three alike (`serving`):

- `peer`: the model whole in plain onnxruntime with its default options (`peer`), timed at
  `run()` in a process of its own: what a user would run instead;
- `whole`: the model as one slice behind mopar's gateway (`slice_runtime.local`);
- `partitioned`: the plan's slices, one worker process each, behind the same gateway; once
  more per further `--codec` (`partitioned[none]`, ...), the same slices with the workers
  told that codec, each taking its turn too (`transfers`: what moving the tensors was
  predicted to cost and cost, per codec).

With `batching`, `whole+batching` and `partitioned+batching` too: whole and partitioned with
the gateway's dynamic batching on (`slice_runtime.gateway.batching`), for a model with a
symbolic batch planned with a maximum batch of 2 or more. Their functions' figures are per
request: a run serves several, so its time and fee are shared among them.

Workers run here or, given hosts (`--worker-host`, network namespaces built by `topology`),
on those hosts in turn, so the tensors cross real, rate-limited links; the gateway runs in
this process, so on the gateway's host.

Reported per serving: latency percentiles and throughput; per function its measured peak RSS
and median handling time (read + compute + write, what a platform bills); from those, per
pricing table, the allocated memory (peak RSS rounded up to the platform's step, never a
guess), GB-seconds and cost per million requests; resource efficiency; bytes moved. Beside
them what the plan predicted, the ratios against the peer and between mopar's two, and the
attainable saving (`plan.limit`).

Resource efficiency = memory used over time / memory allocated over time. "Used" is what
the function's nodes touch while they run (the runtime, each node's own weights, the live
activations; `planner.Option.touched_byte_ms`), scaled to the measured duration;
"allocated" is the measured allocation times the billed duration.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopar.bench.serving import MoparServing, Report, Served, serve_all
from mopar.bench.transfers import priced_with, transfer_report
from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile
from mopar.plan import planfile, pricing
from mopar.plan.limit import share_reached
from mopar.plan.memory import MB
from mopar.plan.planner import Option, Plan
from mopar.profile.profiler import Profile, machine_facts
from mopar.slice.slicer import slice_model
from slice_runtime import manifest as manifests
from slice_runtime import v2
from slice_runtime.gateway.batching import BatchingPolicy
from slice_runtime.local import Host
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs

SERVINGS = ("peer", "peer_best", "whole", "partitioned")
BATCHED = "+batching"  # the label suffix of a serving with dynamic batching


def _functions(plan: Plan, manifest: manifests.Manifest, served: Served, requests: int) -> list[dict[str, Any]]:
    """One row per function (slice or sub-slice): measured RSS and time, planned touch, and the
    runs a request costs it (1 unless dynamic batching shares runs among requests)."""
    by_group: dict[str, Option] = {manifests.slice_id(i): option for i, option in enumerate(plan.slices)}
    rows = []
    for entry in manifest.slices:
        option = by_group[entry.group or entry.id]
        stats = served.stats[entry.id]
        measured_ms = float(stats["total_ms"])
        rows.append(
            {
                "id": entry.id,
                "rss_mb": round(stats["peak_rss_bytes"] / MB, 1),
                "time_ms": round(measured_ms, 3),
                "compute_ms": stats["compute_ms"],
                "read_ms": stats["read_ms"],
                "write_ms": stats["write_ms"],
                "runs": stats["runs"],
                "runs_per_request": round((stats["runs"] - served.runs_before.get(entry.id, 0)) / max(requests, 1), 4),
                "bytes_raw": stats["read_raw_bytes"] + stats["write_raw_bytes"],
                "bytes_compressed": stats["read_wire_bytes"] + stats["write_wire_bytes"],
                "touched_byte_ms": option.touched_byte_ms / option.parts * measured_ms / max(option.duration_ms, 1e-9),
                "cpu": option.vcpus,
                "threads": option.threads,
            }
        )
    return rows


def _figures(served: Served, functions: list[dict[str, Any]], requests: int, table: pricing.Pricing) -> dict[str, Any]:
    latencies = sorted(served.latencies_ms)
    figures: dict[str, Any] = {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "throughput_rps": round(len(served.latencies_ms) / max(served.busy_s, 1e-9), 3),
        "functions": len(functions),
        "mismatched_outputs": served.mismatches,
    }
    # Each function as the plan sized it (its vCPUs), with the memory its measured peak needs.
    share = [f.get("runs_per_request", 1.0) for f in functions]  # a batched run is shared
    allocations = [measured_allocation(table, f["rss_mb"], f["cpu"]) for f in functions]
    runs = list(zip(allocations, functions, share))
    allocated = sum(r * a.memory_mb * MB * table.billed_ms(f["time_ms"]) for a, f, r in runs)
    # Keyed by the table, as plan.json's pricing names it.
    figures["memory_mb"] = {table.name: [a.memory_mb for a in allocations]}
    figures["cpu"] = {table.name: [a.vcpus for a in allocations]}
    figures["gb_seconds"] = {table.name: round(sum(r * table.gb_seconds(a, f["time_ms"]) for a, f, r in runs), 8)}
    figures["vcpu_seconds"] = {table.name: round(sum(r * table.vcpu_seconds(a, f["time_ms"]) for a, f, r in runs), 8)}
    figures["cost_per_million_usd"] = {
        table.name: round(1e6 * sum(r * table.invocation_usd(a, f["time_ms"]) for a, f, r in runs), 6)
    }
    figures["resource_efficiency"] = {table.name: round(sum(f["touched_byte_ms"] for f in functions) / allocated, 4)}
    return figures


def measured_allocation(table: pricing.Pricing, rss_mb: float, vcpus: float) -> pricing.Allocation:
    """What the table allocates a function of `vcpus` whose measured peak is `rss_mb` (more
    vCPUs where that memory needs them, as the platform would)."""
    exact = table.allocations(rss_mb, vcpus, vcpus)
    if exact:
        return exact[0]
    larger = [a for a in table.allocations(rss_mb) if a.vcpus >= vcpus]
    return larger[0] if larger else table.allocation(rss_mb)


def _peer_figures(
    served: Served, peak_rss_bytes: int, whole: Option, requests: int, table: pricing.Pricing, vcpus: float
) -> dict[str, Any]:
    """A peer as one function of `vcpus`: its peak RSS, its median run() time, the nodes it touches."""
    run_ms = statistics.median(served.latencies_ms)
    touched = whole.touched_byte_ms * run_ms / max(whole.duration_ms, 1e-9)
    row = {"id": "peer", "rss_mb": round(peak_rss_bytes / MB, 1), "time_ms": round(run_ms, 3),
           "touched_byte_ms": touched, "cpu": vcpus, "threads": math.ceil(vcpus)}  # fmt: skip
    return {**_figures(served, [row], requests, table), "slices": [row]}


def best_peer_threads(plan: Plan) -> tuple[int, float]:
    """(threads, vCPUs) of `peer_best`: plain onnxruntime at its best for the objective: every
    vCPU a function may have for latency (--cores, or --max-cpu), otherwise the size the
    planner found best for the model whole (the cheapest; the cheapest meeting the SLO)."""
    if plan.constraints.objective == "latency":
        vcpus = plan.constraints.cpu_ceiling
        return max(1, math.floor(vcpus + 1e-9)), float(max(1, math.floor(vcpus + 1e-9)))
    return plan.whole.threads, plan.whole.vcpus


def _vs(base: Mapping[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """Cost as base / ours (higher: ours is cheaper), latency as ours / base (lower: ours is faster)."""
    tables = base["cost_per_million_usd"]
    return {
        "cost": {t: round(base["cost_per_million_usd"][t] / ours["cost_per_million_usd"][t], 4) for t in tables},
        "latency_p50": round(ours["p50_ms"] / base["p50_ms"], 4),
        "resource_efficiency": {
            t: round(ours["resource_efficiency"][t] / base["resource_efficiency"][t], 4) for t in tables
        },
        "throughput": round(ours["throughput_rps"] / base["throughput_rps"], 4),
    }


def _predicted(plan: Plan, options: list[Option], measured: Mapping[str, Any]) -> dict[str, Any]:
    """What the plan predicted for a serving, beside what was measured (ratio measured / predicted)."""
    figures = plan.figures(options)
    cost = measured["cost_per_million_usd"].get(plan.pricing.name)
    return {
        "latency_ms": figures["latency_ms"],
        "cost_per_million_usd": figures["cost_per_million_usd"],
        "pricing": plan.pricing.name,
        "measured_latency_ms": measured["p50_ms"],
        "measured_cost_per_million_usd": cost,
        "latency_error": round(measured["p50_ms"] / figures["latency_ms"], 4),
        "cost_error": round(cost / figures["cost_per_million_usd"], 4) if cost else None,
    }


def bench(
    model: ModelFile,
    profile: Profile,
    plan: Plan,
    whole_plan: Plan,
    requests: int = 50,
    concurrency: int = 1,
    transport: str = "shm",
    warmup: int = 3,
    work_dir: Path | None = None,
    progress: Report | None = None,
    codecs: Sequence[str] = ("auto",),
    hosts: Sequence[Host] = (),
    batching: BatchingPolicy | None = None,
) -> dict[str, Any]:
    """Serve and measure the peer, `whole_plan` and `plan` (once per setting of `codecs`, the
    workers told that codec; the first is `partitioned`), workers on `hosts` in turn (none:
    here), tensors inside the calls up to the plan's link model's `inline_bytes`; with
    `batching`, whole and partitioned again with the gateway's dynamic batching."""
    report = progress or (lambda phase, done, total: None)
    if requests < 1 or concurrency < 1:
        raise UsageError("--requests and --concurrency must be at least 1")
    if batching is not None and (plan.constraints.max_batch or 1) < 2:
        raise UsageError("--batching needs a model with a symbolic batch and --max-batch of 2 or more")
    if not codecs or len(set(codecs)) != len(codecs):
        raise UsageError(f"give each --codec once, got {', '.join(codecs) or 'none'}")
    try:
        priced = {name: priced_with(plan, name) for name in codecs}
    except ValueError as error:
        raise UsageError(str(error)) from None
    work = Path(work_dir or tempfile.mkdtemp(prefix="mopar-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    feeds = random_inputs(model.inputs, seed=0, ranges=model.input_ranges)
    reference = dict(zip([o.name for o in model.outputs], open_session(model.serialized()).run(None, feeds)))
    body, headers = v2.encode_request(feeds, binary=True, binary_outputs=True)
    shapes = profile.settings.get("input_shapes", {})
    chosen = {"whole": whole_plan, "partitioned": plan}
    manifests_by_label: dict[str, manifests.Manifest] = {}
    plan_files: dict[str, dict[str, Any]] = {}
    for label, which in chosen.items():
        plan_files[label] = planfile.to_json(which, profile.model, profile.tensor_specs, shapes, profile.batch)
        manifests_by_label[label] = slice_model(model, plan_files[label], work / label)
    model_file = work / "model.onnx"
    model_file.write_bytes(model.serialized())
    best_threads, best_vcpus = best_peer_threads(plan)
    peer_threads = {"peer": 1, "peer_best": best_threads}
    labels = {name: "partitioned" if i == 0 else f"partitioned[{name}]" for i, name in enumerate(codecs)}
    inline = plan.link.inline_bytes
    cores = plan.constraints.cores  # workers run their planned threads, at most these
    whole_hosts, part_hosts = (_placed(manifests_by_label[label], hosts) for label in chosen)
    servings = [
        MoparServing(
            work / "whole", transport, "whole", codec=codecs[0], hosts=whole_hosts, inline_limit=inline, cores=cores
        )
    ]
    servings += [
        MoparServing(work / "partitioned", transport, labels[name], codec=name, namespace=f"bench-p{i}",
                     hosts=part_hosts, inline_limit=inline, cores=cores)
        for i, name in enumerate(codecs)
    ]  # fmt: skip
    if batching is not None:
        servings += [
            MoparServing(work / label, transport, label + BATCHED, codec=codecs[0], namespace=f"bench-{label}-batched",
                         hosts=placed, inline_limit=inline, batching=batching, cores=cores)
            for label, placed in (("whole", whole_hosts), ("partitioned", part_hosts))
        ]  # fmt: skip
    turns: list[str] = []
    served, peer_stats = asyncio.run(
        serve_all(
            model_file,
            servings,
            peer_threads,
            body,
            headers,
            reference=reference,
            requests=requests,
            concurrency=concurrency,
            warmup=warmup,
            report=report,
            turns=turns,
        )
    )
    table = plan.pricing
    results: dict[str, Any] = {
        label: {
            **_peer_figures(served[label], int(peer_stats[label]["peak_rss_bytes"]), plan.whole, requests, table,
                            1.0 if label == "peer" else best_vcpus),
            "threads": peer_threads[label],
        }
        for label in peer_threads
    }  # fmt: skip
    for label, which in chosen.items():
        functions = _functions(which, manifests_by_label[label], served[label], requests)
        results[label] = {**_figures(served[label], functions, requests, table), "slices": functions}
    batched: dict[str, Any] = {}
    if batching is not None:
        for label, which in chosen.items():
            functions = _functions(which, manifests_by_label[label], served[label + BATCHED], requests)
            figures = _figures(served[label + BATCHED], functions, requests, table)
            batched[label] = {**figures, "slices": functions, "vs_unbatched": _vs(results[label], figures)}
    peer, peer_best, whole, ours = (results[label] for label in SERVINGS)
    by_codec = {}
    for name in codecs:
        figures = ours
        if labels[name] != "partitioned":
            functions = _functions(plan, manifests_by_label["partitioned"], served[labels[name]], requests)
            figures = {**_figures(served[labels[name]], functions, requests, table), "slices": functions}
        by_codec[name] = {
            **figures,
            "label": labels[name],
            "predicted": _predicted(priced[name], priced[name].slices, figures),
            "transfer": transfer_report(priced[name], manifests_by_label["partitioned"], served[labels[name]].stats),
        }
    ratios = {
        **_vs(whole, ours),
        "vs_peer_best": {"partitioned": _vs(peer_best, ours), "whole": _vs(peer_best, whole)},
        "vs_peer": {"partitioned": _vs(peer, ours), "whole": _vs(peer, whole)},
    }
    # The first codec's p50 over each other's: below 1, the first is faster.
    ratios["codec_p50"] = {name: round(ours["p50_ms"] / by_codec[name]["p50_ms"], 4) for name in codecs[1:]}
    limit = plan_files["partitioned"]["limit"]
    measured_saving = whole["cost_per_million_usd"][table.name] / max(ours["cost_per_million_usd"][table.name], 1e-15)
    return {
        "model": {"name": model.name, "sha256": model.sha256, "weights_mb": round(model.weight_bytes / MB, 1)},
        "machine": machine_facts(1, "all"),
        "settings": {
            "requests": requests,
            "concurrency": concurrency,
            "warmup": warmup,
            "transport": transport,
            "objective": plan.constraints.objective,
            "pricing": plan.pricing.name,
            "cores": plan.constraints.cores,
            "slo_ms": plan.constraints.slo_ms,
            "min_cpu": plan.constraints.min_cpu,
            "max_cpu": plan.constraints.cpu_ceiling,
            "peer_threads": peer_threads,
            "codecs": list(codecs),
            "inline_bytes": plan.link.inline_bytes,
            "worker_hosts": [host.address for host in hosts],
            "link": plan.link.source,
            "turns": turns,  # who had each turn, in order: peer, whole, partitioned, peer, ...
            "peer_options": {label: stats["options"] for label, stats in peer_stats.items()},
        },
        "plan": {
            "slices": len(plan.slices),
            "subslices": [o.parts for o in plan.slices],
            "prepack": [o.prepack for o in plan.slices],
            "cpu": [o.vcpus for o in plan.slices],
            "threads": [o.threads for o in plan.slices],
            "whole_cpu": plan.whole.vcpus,
            "codecs": {t: transfer.setting.name for o in plan.slices for t, transfer in o.writes.items()},
            "predicted_cost_ratio": round(plan.whole.cost_usd / max(plan.cost_usd, 1e-15), 4),
            "max_batch": plan.constraints.max_batch or 1,
        },
        "peer": peer,
        "peer_best": peer_best,
        "whole": whole,
        "partitioned": ours,
        "codecs": by_codec,
        "predicted": {
            "whole": _predicted(whole_plan, whole_plan.slices, whole),
            "partitioned": _predicted(plan, plan.slices, ours),
        },
        "ratios": ratios,
        "limit": {
            **limit,
            "measured_saving": round(measured_saving, 4),
            "measured_share_reached": round(share_reached(limit["saving"], measured_saving), 4),
        },  # fmt: skip
        "transfer_overhead": _transfer_overhead(ours["slices"]),
        **({"batched": {"max_queue_delay_us": batching.max_queue_delay_microseconds, **batched}} if batching else {}),
    }


def _placed(manifest: manifests.Manifest, hosts: Sequence[Host]) -> dict[str, Host]:
    """The manifest's functions on `hosts` in turn, in manifest order (none: all here)."""
    return {entry.id: hosts[i % len(hosts)] for i, entry in enumerate(manifest.slices)} if hosts else {}


def _transfer_overhead(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """Per function: (read + write) / compute — the cost of a cut against the work it separates."""
    shares = {s["id"]: round((s["read_ms"] + s["write_ms"]) / max(s["compute_ms"], 1e-9), 4) for s in slices}
    return {
        "per_function": shares,
        "max": max(shares.values()) if shares else 0.0,
        "median": statistics.median(shares.values()) if shares else 0.0,
    }


def save(result: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
