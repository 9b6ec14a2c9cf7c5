"""`mopar bench MODEL`: whole vs partitioned, measured; table on stdout, result.json on request."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from mopar.bench.benchmark import bench, save
from mopar.bench.topology import parse_host
from mopar.bench.transfers import parse_codec
from mopar.cli.console import err, out, progress
from mopar.cli.plan import load_link, load_or_make_profile, make_plan
from mopar.errors import UsageError
from mopar.model.modelfile import load_model, parse_input_shape
from mopar.plan.planning import whole_plan
from slice_runtime.gateway.batching import BatchingPolicy


def run(args: argparse.Namespace) -> int:
    try:
        codecs = [parse_codec(text) for text in args.codec] or ["auto"]
        hosts = [parse_host(text) for text in args.worker_host]
    except ValueError as error:
        raise UsageError(str(error)) from None
    link = load_link(args.link)
    if args.inline_kb is not None:  # checked by mopar.cli.checks
        link = replace(link, inline_bytes=args.inline_kb * 1024)  # the plan prices where tensors go
    model = load_model(args.model, dict(parse_input_shape(t) for t in args.input_shape))
    profile = load_or_make_profile(model, args.profile, args.threads, args.optimization, args.max_threads)
    # Workers here run on whole cores: nothing holds a process to a fraction of one, so the
    # bench plans whole vCPUs, the sizes it can measure as planned.
    plan = make_plan(model, profile, args, link, whole_cpus=True)
    whole = whole_plan(plan)
    # Without --work-dir the servings' copies of the model and slices go when the run ends.
    with progress(f"benchmarking {model.name}") as report, tempfile.TemporaryDirectory(prefix="mopar-bench-") as tmp:
        result = bench(
            model,
            profile,
            plan,
            whole,
            args.requests,
            args.concurrency,
            args.transport,
            args.warmup,
            Path(args.work_dir or tmp),
            report,
            codecs=codecs,
            hosts=hosts,
            batching=BatchingPolicy(args.max_queue_delay_us) if args.batching else None,
        )
    out.print(result_table(result))
    if len(codecs) > 1 or hosts:
        out.print(codec_table(result))
    if "batched" in result:
        out.print(batching_table(result))
    if args.output:
        save(result, args.output)
        err.print(f"wrote {args.output}")
    return 0


def codec_table(result: dict[str, Any]) -> Table:
    """The same slices served once per codec: latency, bytes and transfer, predicted beside measured."""
    settings = result["settings"]
    where = ", ".join(settings["worker_hosts"]) or "this machine"
    table = Table(
        title=f"codecs: the same {result['plan']['slices']} slices, workers on {where}, tensors inside the calls "
        f"up to {settings['inline_bytes'] // 1024} KiB; link: {settings['link'] or 'reference'}"
    )
    for column in ("codec", "p50 / p95 ms", "vs first", "predicted p50", "MB/request raw / wire", "transfer ms"):
        table.add_column(column, justify="left" if column == "codec" else "right")
    first = settings["codecs"][0]
    for name, figures in result["codecs"].items():
        transfer = figures["transfer"]
        table.add_row(
            name,
            f"{figures['p50_ms']:.1f} / {figures['p95_ms']:.1f}",
            "" if name == first else f"{result['ratios']['codec_p50'][name]:.3f}x",
            f"{figures['predicted']['latency_ms']:.1f}",
            f"{transfer['bytes_raw_per_request'] / 1e6:.2f} / {transfer['bytes_wire_per_request'] / 1e6:.2f}",
            f"{transfer['measured_ms']:.1f} of {transfer['predicted_ms']:.1f} predicted "
            f"({transfer['error'] or 0:.2f}x)",
        )
    return table


def result_table(result: dict[str, Any]) -> Table:
    """The peer at its best first: p50, cost and vCPU-seconds under the plan's pricing table,
    predicted beside measured, against plain onnxruntime at its best and at one thread."""
    peer, best, whole, ours = (result[label] for label in ("peer", "peer_best", "whole", "partitioned"))
    vs_best, vs_peer = result["ratios"]["vs_peer_best"], result["ratios"]["vs_peer"]
    predicted, settings = result["predicted"], result["settings"]
    name = settings["pricing"]
    table = Table(
        title=f"{result['model']['name']}, objective {settings['objective']}, pricing {name}: plain onnxruntime at "
        f"{best['threads']} thread(s) (its best) and at 1, mopar whole, mopar partitioned ({ours['functions']} "
        f"functions); {settings['requests']} requests each, alternating, concurrency {settings['concurrency']}"
    )
    for column in ("", "peer best", "peer 1 thr", "whole", "partitioned", "partitioned vs best", "vs 1 thr"):
        table.add_column(column, justify="left" if not column else "right")

    def ms(figures: dict[str, Any]) -> str:
        return f"{figures['p50_ms']:.1f} / {figures['p95_ms']:.1f}"

    table.add_row(
        "vCPUs",
        f"{best['cpu'][name][0]:g}",
        f"{peer['cpu'][name][0]:g}",
        " + ".join(f"{c:g}" for c in whole["cpu"][name]),
        " + ".join(f"{c:g}" for c in ours["cpu"][name]),
        "",
        "",
    )
    table.add_row(
        "p50 / p95 ms",
        ms(best),
        ms(peer),
        ms(whole),
        ms(ours),
        f"{vs_best['partitioned']['latency_p50']:.3f}x p50",
        f"{vs_peer['partitioned']['latency_p50']:.3f}x",
    )
    table.add_row(
        "  predicted p50 ms",
        "",
        "",
        f"{predicted['whole']['latency_ms']:.1f}",
        f"{predicted['partitioned']['latency_ms']:.1f}",
        f"measured {predicted['partitioned']['latency_error']:.2f}x",
        "",
    )
    table.add_row(
        f"$/M ({name})",
        f"{best['cost_per_million_usd'][name]:.4f}",
        f"{peer['cost_per_million_usd'][name]:.4f}",
        f"{whole['cost_per_million_usd'][name]:.4f}",
        f"{ours['cost_per_million_usd'][name]:.4f}",
        f"{vs_best['partitioned']['cost'][name]:.2f}x cheaper",
        f"{vs_peer['partitioned']['cost'][name]:.2f}x",
    )
    table.add_row(
        "  predicted $/M",
        "",
        "",
        f"{predicted['whole']['cost_per_million_usd']:.4f}",
        f"{predicted['partitioned']['cost_per_million_usd']:.4f}",
        f"measured {predicted['partitioned']['cost_error'] or 0:.2f}x",
        "",
    )
    table.add_row(
        "vCPU-s / GB-s per 1k requests",
        *(
            f"{1000 * f['vcpu_seconds'][name]:.2f} / {1000 * f['gb_seconds'][name]:.2f}"
            for f in (best, peer, whole, ours)
        ),
        "",
        "",
    )
    table.add_row(
        "throughput req/s",
        *(f"{f['throughput_rps']:.2f}" for f in (best, peer, whole, ours)),
        f"{vs_best['partitioned']['throughput']:.2f}x",
        f"{vs_peer['partitioned']['throughput']:.2f}x",
    )
    table.add_row(
        "resource efficiency",
        *(f"{f['resource_efficiency'][name]:.1%}" for f in (best, peer, whole, ours)),
        "",
        "",
    )
    limit = result["limit"]
    table.add_row(
        "saving vs whole (limit)",
        "",
        "",
        "",
        f"{limit['measured_saving']:.2f}x of {limit['saving']:.2f}x",
        f"{limit['measured_share_reached']:.0%} of the attainable",
        "",
    )
    raw = sum(s["bytes_raw"] for s in ours["slices"])
    wire = sum(s["bytes_compressed"] for s in ours["slices"])
    table.add_row("bytes moved raw / wire", "", "", "", f"{raw / 2**20:.1f} / {wire / 2**20:.1f} MB", "", "")
    table.add_row("transfer / compute, worst slice", "", "", "", f"{result['transfer_overhead']['max']:.1%}", "", "")
    return table


def batching_table(result: dict[str, Any]) -> Table:
    """Throughput and latency with and without the gateway's dynamic batching."""
    batched, settings = result["batched"], result["settings"]
    table = Table(
        title=f"dynamic batching: concurrency {settings['concurrency']}, max batch "
        f"{result['plan']['max_batch']}, max queue delay {batched['max_queue_delay_us']} us"
    )
    for column in ("serving", "throughput req/s", "p50 ms", "p99 ms", "requests / run"):
        table.add_column(column, justify="left" if column == "serving" else "right")
    for label in ("whole", "partitioned"):
        for name, figures in ((label, result[label]), (f"{label} + batching", batched[label])):
            runs = figures["slices"][0]["runs_per_request"]  # of the first function
            table.add_row(
                name,
                f"{figures['throughput_rps']:.2f}",
                f"{figures['p50_ms']:.1f}",
                f"{figures['p99_ms']:.1f}",
                f"{1 / runs:.2f}" if runs else "-",
            )
        ratio = batched[label]["vs_unbatched"]
        table.add_row(
            f"  {label}: batching vs not", f"{ratio['throughput']:.2f}x", f"{ratio['latency_p50']:.2f}x", "", ""
        )
    return table
