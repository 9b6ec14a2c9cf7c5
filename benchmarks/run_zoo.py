"""Benchmark every zoo model against the peer at its best and write benchmarks/RESULTS.md.

    python benchmarks/run_zoo.py [--requests 30] [--models vgg16,bert-base] [--extra NAME=FILE ...]

For each full-size zoo model (and each ONNX file given with --extra NAME=FILE, e.g. PyTorch
exports): build it, profile it once at 1 .. this machine's cores threads, then `mopar bench`
it (concurrency 1, on this machine's cores) with these plans:

  latency          - the fastest plan (up to 24 slices, 2-way sub-slices), each slice given
                     the vCPUs that help it; against plain onnxruntime on every core;
  slo              - the cheapest plan (kubernetes pricing) whose predicted latency is within
                     1.1x the latency run's `peer_best` p50 (onnxruntime on every core);
  cost-TABLE       - the cheapest plan under each pricing table (kubernetes, lambda, knative,
                     and lambda-flat, the paper's accounting), against onnxruntime at the size
                     cheapest under that table.

Every run serves `peer` (onnxruntime, one thread), `peer_best` (onnxruntime at its best thread
count for the objective), mopar whole and mopar partitioned in turns, request by request.
Each run's result.json is kept beside RESULTS.md (`results/MODEL.PLAN.json`; an SLO the planner
refuses as below its fastest plan is kept as `{"refused": ...}`); the tables are rendered
from them, so `--render` rebuilds RESULTS.md without measuring again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("resnet50", "vgg16", "mobilenetv2", "yolov5s", "bert-base", "lstm", "edgestereo")
TABLES = ("kubernetes", "lambda", "knative", "lambda-flat")
SLO_OVER_PEER_BEST = 1.1
LATENCY = ["--objective", "latency", "--max-slices", "24", "--max-split", "2"]
PLANS = ("latency", "slo", *(f"cost-{t}" for t in TABLES))


def mopar(*args: str) -> subprocess.CompletedProcess[str]:
    print("$ mopar " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "mopar", *args], cwd=ROOT, text=True, stderr=subprocess.PIPE)


def checked(*args: str) -> None:
    done = mopar(*args)
    if done.returncode != 0:
        sys.exit(f"mopar {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def measure(model: str, onnx_file: Path | None, out: Path, requests: int, plans: tuple[str, ...] = PLANS) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if onnx_file is None:
        onnx_file = work / f"{model}.onnx"
        if not onnx_file.exists():
            checked("models", "build", model, "-o", str(onnx_file))
    profile = work / f"{model}.profile.json"
    if not profile.exists():
        checked("profile", str(onnx_file), "--top", "5", "-o", str(profile))
    common = [str(onnx_file), "--profile", str(profile), "--requests", str(requests)]
    latency = out / f"{model}.latency.json"
    if "latency" in plans:
        checked("bench", *common, *LATENCY, "-o", str(latency))
    if "slo" not in plans:
        return _costs(common, model, out, plans)
    slo_ms = round(SLO_OVER_PEER_BEST * json.loads(latency.read_text())["peer_best"]["p50_ms"], 1)
    slo = out / f"{model}.slo.json"
    done = mopar("bench", *common, *LATENCY[2:], "--objective", "slo", "--slo-ms", str(slo_ms), "-o", str(slo))
    if done.returncode != 0:  # the planner's fastest plan is slower than the SLO: say so, keep going
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        slo.write_text(json.dumps({"refused": reason, "slo_ms": slo_ms}, indent=1) + "\n")
    _costs(common, model, out, plans)


def _costs(common: list[str], model: str, out: Path, plans: tuple[str, ...]) -> None:
    for table in TABLES:
        if f"cost-{table}" in plans:
            checked("bench", *common, "--pricing", table, "-o", str(out / f"{model}.cost-{table}.json"))


def _load(out: Path, model: str, plan: str) -> dict[str, Any] | None:
    path = out / f"{model}.{plan}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _functions(r: dict[str, Any]) -> str:
    """Slices (sub-slices) and their vCPUs, e.g. `3: 2+1+1 vCPU` or `1 (whole): 2 vCPU`."""
    plan = r["plan"]
    parts = [k for k in plan["subslices"] if k > 1]
    count = f"{plan['slices']}" + (f" ({'+'.join(map(str, parts))}-way)" if parts else "")
    if plan["slices"] == 1 and not parts:
        count += " (whole)"
    return f"{count}: {'+'.join(f'{c:g}' for c in plan['cpu'])} vCPU"


def _error(predicted: dict[str, Any], figure: str) -> str:
    value = predicted.get(f"{figure}_error")
    return f"{value:.2f}" if value else "-"


def render(out: Path, requests: int, models: list[str], command: str = "") -> str:
    latency_rows, slo_rows, cost_rows, error_rows = [], [], [], []
    latency_ratios, errors = [], []
    savings: dict[str, list[float]] = {t: [] for t in TABLES}
    machine: dict[str, Any] = {}
    for model in models:
        r = _load(out, model, "latency")
        if r is not None:
            machine = r["machine"]
            best, peer, whole, ours = r["peer_best"], r["peer"], r["whole"], r["partitioned"]
            vs = r["ratios"]["vs_peer_best"]["partitioned"]
            latency_ratios.append(vs["latency_p50"])
            latency_rows.append(
                row(
                    model,
                    _functions(r),
                    f"{best['p50_ms']:.1f} ({best['threads']} thr)",
                    f"{peer['p50_ms']:.1f}",
                    f"{whole['p50_ms']:.1f}",
                    f"**{ours['p50_ms']:.1f}** ({vs['latency_p50']:.3f}x)",
                    f"{r['predicted']['partitioned']['latency_ms']:.1f} "
                    f"({_error(r['predicted']['partitioned'], 'latency')})",
                )
            )
        s = _load(out, model, "slo")
        if s is not None and "refused" in s:
            slo_rows.append(row(model, f"{s['slo_ms']:g}", "refused: " + s["refused"].replace("|", "/"), "", "", ""))
        elif s is not None:
            best, ours = s["peer_best"], s["partitioned"]
            table = s["settings"]["pricing"]
            vs = s["ratios"]["vs_peer_best"]["partitioned"]
            met = "met" if ours["p50_ms"] <= s["settings"]["slo_ms"] else "**missed**"
            slo_rows.append(
                row(
                    model,
                    f"{s['settings']['slo_ms']:g}",
                    f"{_functions(s)}; peer_best {best['threads']} thr",
                    f"{ours['p50_ms']:.1f} ({met}); peer_best {best['p50_ms']:.1f}",
                    f"{1000 * best['vcpu_seconds'][table]:.2f} / {1000 * ours['vcpu_seconds'][table]:.2f}",
                    f"{vs['cost'][table]:.3f}x (predicted {s['plan']['predicted_cost_ratio']:.3f}x; "
                    f"bound {s['limit']['saving']:.3f}x)",
                )
            )
        cells = []
        for table in TABLES:
            c = _load(out, model, f"cost-{table}")
            if c is None:
                cells.append("")
                continue
            measured = c["ratios"]["vs_peer_best"]["partitioned"]["cost"][table]
            savings[table].append(measured)
            cells.append(
                f"{_functions(c)}<br>{measured:.3f}x (pred. {c['plan']['predicted_cost_ratio']:.3f}x, "
                f"bound {c['limit']['saving']:.3f}x)"
            )
            for side in ("whole", "partitioned"):
                predicted = c["predicted"][side]
                for figure in ("latency", "cost"):
                    if predicted.get(f"{figure}_error"):
                        errors.append(abs(predicted[f"{figure}_error"] - 1))
            error_rows.append(
                row(
                    model,
                    f"cost-{table}",
                    f"{c['predicted']['partitioned']['latency_ms']:.1f} / "
                    f"{c['predicted']['partitioned']['measured_latency_ms']:.1f} "
                    f"({_error(c['predicted']['partitioned'], 'latency')})",
                    f"{c['predicted']['partitioned']['cost_per_million_usd']:.4f} / "
                    f"{c['predicted']['partitioned']['measured_cost_per_million_usd'] or 0:.4f} "
                    f"({_error(c['predicted']['partitioned'], 'cost')})",
                )
            )
        cost_rows.append(row(model, *cells))
    within = sum(e <= 0.15 for e in errors)
    lines = [
        "# Benchmark results",
        "",
        "Every figure comes from one `mopar bench` run that serves four things at once on this machine and",
        "sends them the same requests in turns (peer, peer_best, whole, partitioned, peer, ...), so the",
        "machine's drift hits all alike:",
        "",
        "- **peer_best**: the model whole in plain onnxruntime with its default options at its best thread count",
        "  for the objective (every core for latency; the size cheapest under the pricing table for cost; the",
        "  cheapest meeting the SLO for slo), timed at `run()` in its own process (no HTTP at all): what a user",
        "  would run instead, tuned. **The one to beat.**",
        "- **peer**: the same at one intra-op thread;",
        "- **whole**: the model as one slice behind mopar's gateway, at the planner's best size for it;",
        "- **partitioned**: the plan's slices, one worker process each with its planned threads, behind the",
        "  same gateway, over HTTP with binary tensors.",
        "",
        f"{requests} requests each after 3 warm-up requests, concurrency 1. Costs are under the plan's pricing",
        "table: each function at its planned vCPUs with memory from its measured peak RSS, for its measured",
        "median handling time; the peers as one function of their threads' vCPUs and peak RSS for their",
        "median `run()` time. A local run cannot hold a process to a fraction of a core, so `mopar bench`",
        "plans whole vCPUs.",
        "",
        f"Machine: {machine.get('cpu_count')} cores ({machine.get('cpu_model')}), onnxruntime "
        f"{machine.get('onnxruntime')}, Python {machine.get('python')}.",
        "",
        "Produced by:",
        "",
        "```sh",
        command or f"python benchmarks/run_zoo.py --requests {requests}",
        "```",
        "",
        "## Latency against onnxruntime on every core",
        "",
        "`--objective latency`: p50 ms; for the partitioned plan its ratio to peer_best (lower is faster) and",
        "its predicted p50 (measured / predicted in brackets).",
        "",
        "| model | plan: slices: vCPUs | peer_best p50 | peer (1 thr) p50 | whole p50 | partitioned p50 | predicted |",
        "|---|---|---|---|---|---|---|",
        *latency_rows,
        "",
        f"Geometric mean of partitioned / peer_best p50: **{_geomean(latency_ratios):.3f}x**.",
        "",
        "## Within an SLO at less CPU",
        "",
        f"`--objective slo --slo-ms` {SLO_OVER_PEER_BEST}x the latency run's peer_best p50, kubernetes pricing:",
        "the cheapest plan predicted to meet it, against onnxruntime at the cheapest size that meets it.",
        "vCPU-seconds per 1,000 requests, peer_best / partitioned; cost as peer_best / partitioned (higher:",
        "mopar is cheaper), predicted, and the bound no partition can pass under this table.",
        "",
        "| model | SLO ms | plan | partitioned p50 ms | vCPU-s / 1k req. | cost saving |",
        "|---|---|---|---|---|---|",
        *slo_rows,
        "",
        "## Cost under each platform's bill",
        "",
        "`--objective cost --pricing TABLE`: the plan, then the measured cost of onnxruntime at its cheapest",
        "size over mopar's (higher: mopar is cheaper; 1.000x: the model stays whole at the same size), the",
        "predicted saving, and the attainable bound under that table (every node its own function at its own",
        "best size, no transfer, no fee, no billing step).",
        "",
        "| model | kubernetes (default) | lambda | knative (Cloud Run) | lambda-flat (the paper's accounting) |",
        "|---|---|---|---|---|",
        *cost_rows,
        "",
        "Geometric mean of the measured saving against peer_best: "
        + ", ".join(f"{t} **{_geomean(v):.3f}x**" for t, v in savings.items() if v)
        + ".",
        "",
        "## Predicted beside measured",
        "",
        "The partitioned plans of the cost runs: predicted / measured p50 ms and $ per million under the",
        f"plan's table (measured / predicted in brackets). Within 15 %: {within} of {len(errors)} predictions",
        "(whole and partitioned, latency and cost, every cost run).",
        "",
        "| model | plan | p50 ms | $/M |",
        "|---|---|---|---|",
        *error_rows,
        "",
        "## Activations over real links",
        "",
        "Compression against none across rate-limited links between hosts in network namespaces (200 Mbit/s,",
        "1 Gbit/s, loopback), predicted transfer beside measured: [links.md](links.md)",
        "(`benchmarks/run_links.py`).",
        "",
        "## Dynamic batching",
        "",
        "Throughput and latency with and without the gateway's dynamic batching, at concurrency 8 on",
        "ResNet-50 and BERT-base: [batching.md](batching.md) (`benchmarks/run_batching.py`).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FILE", help="an ONNX file to add")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--plans", default=",".join(PLANS), help=f"which plans to measure (default {','.join(PLANS)})")
    parser.add_argument("--render", action="store_true", help="only rebuild RESULTS.md from existing results")
    parser.add_argument("--notes", help="a Markdown file appended to RESULTS.md (what the tables mean for the targets)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, Path | None]] = [(m, None) for m in args.models.split(",") if m]
    runs += [(name, Path(path)) for name, _, path in (e.partition("=") for e in args.extra)]
    if not args.render:
        for model, path in runs:
            started = time.monotonic()
            measure(model, path, out, args.requests, tuple(args.plans.split(",")))
            print(f"{model}: {time.monotonic() - started:.0f} s", flush=True)
    command = f"python benchmarks/run_zoo.py --requests {args.requests}" + "".join(
        f" \\\n    --extra {e}" for e in args.extra
    )
    if args.extra:  # the PyTorch exports, written first by exports.py (in a venv with torch)
        command = "python benchmarks/exports.py benchmarks/results/work/exports\n" + command
    every = [m for m in MODELS if m in {r[0] for r in runs}] + [m for m, p in runs if p is not None]
    text = render(out, args.requests, every, command)
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    (HERE / "RESULTS.md").write_text(text + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
