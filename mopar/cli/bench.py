"""`mopar bench MODEL`: whole vs partitioned, measured; table on stdout, result.json on request."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from mopar.bench.benchmark import TABLES, bench, save
from mopar.cli.console import err, out, progress
from mopar.cli.plan import load_or_make_profile, make_plan
from mopar.model.modelfile import load_model, parse_input_shape
from mopar.plan.planning import whole_plan


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, dict(parse_input_shape(t) for t in args.input_shape))
    profile = load_or_make_profile(model, args.profile, args.threads, args.optimization)
    plan = make_plan(model, profile, args)
    whole = whole_plan(plan)
    with progress(f"benchmarking {model.name}") as report:
        result = bench(
            model,
            profile,
            plan,
            whole,
            args.requests,
            args.concurrency,
            args.transport,
            args.warmup,
            Path(args.work_dir) if args.work_dir else None,
            report,
        )
    out.print(result_table(result))
    if args.output:
        save(result, args.output)
        err.print(f"wrote {args.output}")
    return 0


def result_table(result: dict[str, Any]) -> Table:
    whole, ours, ratios = result["whole"], result["partitioned"], result["ratios"]
    settings = result["settings"]
    table = Table(
        title=f"{result['model']['name']}: whole vs partitioned ({ours['functions']} functions), "
        f"{settings['requests']} requests, concurrency {settings['concurrency']}, "
        f"{settings['transport']}"
    )
    for column in ("", "whole", "partitioned", "ratio"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        "p50 / p95 / p99 ms",
        f"{whole['p50_ms']:.1f} / {whole['p95_ms']:.1f} / {whole['p99_ms']:.1f}",
        f"{ours['p50_ms']:.1f} / {ours['p95_ms']:.1f} / {ours['p99_ms']:.1f}",
        f"{ratios['latency_p50']:.3f}x p50",
    )
    table.add_row(
        "throughput req/s",
        f"{whole['throughput_rps']:.2f}",
        f"{ours['throughput_rps']:.2f}",
        f"{ratios['throughput']:.2f}x",
    )
    for name in TABLES:
        table.add_row(
            f"$/M ({name})",
            f"{whole['cost_per_million_usd'][name]:.4f}",
            f"{ours['cost_per_million_usd'][name]:.4f}",
            f"{ratios['cost'][name]:.2f}x cheaper",
        )
    table.add_row(
        "memory MB (lambda)",
        " ".join(map(str, whole["memory_mb"]["lambda"])),
        " ".join(map(str, ours["memory_mb"]["lambda"])),
        "",
    )
    table.add_row(
        "resource efficiency (lambda)",
        f"{whole['resource_efficiency']['lambda']:.1%}",
        f"{ours['resource_efficiency']['lambda']:.1%}",
        f"{ratios['resource_efficiency']['lambda']:.2f}x",
    )
    raw = sum(s["bytes_raw"] for s in ours["slices"])
    wire = sum(s["bytes_compressed"] for s in ours["slices"])
    table.add_row("bytes moved raw / wire", "", f"{raw / 2**20:.1f} / {wire / 2**20:.1f} MB", "")
    table.add_row("transfer / compute, worst slice", "", f"{result['transfer_overhead']['max']:.1%}", "")
    return table
