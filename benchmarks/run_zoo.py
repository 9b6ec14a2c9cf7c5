"""Benchmark every zoo model against the peer and write benchmarks/RESULTS.md.

    python benchmarks/run_zoo.py [--requests 30] [--models vgg16,bert-base] [--out benchmarks/results]

For each full-size zoo model (and each ONNX file given with --extra NAME=FILE, e.g. PyTorch
exports): build it, profile it once, then `mopar bench` it with two plans and at two loads:
  cost     - the cheapest plan under AWS Lambda pricing (the reference accounting);
  latency  - the fastest plan on this machine's cores (`--cores` defaults to them), up to 24
             slices and 2-way sub-slices; the model stays whole where no plan beats it;
each at concurrency 1 (latency) and 4 (throughput). Every run serves the peer (plain
onnxruntime, default options), mopar whole and mopar partitioned in turns, request by request.
Each run's result.json is kept beside RESULTS.md; the tables are rendered from them, so
`--render` rebuilds RESULTS.md without measuring again.
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
PLANS = {
    "cost": [],
    "latency": ["--objective", "latency", "--max-slices", "24", "--max-split", "2"],
}
LOADS = (1, 4)


def mopar(*args: str) -> None:
    command = [sys.executable, "-m", "mopar", *args]
    print("$ mopar " + " ".join(args), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def measure(model: str, onnx_file: Path | None, out: Path, requests: int) -> None:
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if onnx_file is None:
        onnx_file = work / f"{model}.onnx"
        if not onnx_file.exists():
            mopar("models", "build", model, "-o", str(onnx_file))
    profile = work / f"{model}.profile.json"
    if not profile.exists():
        mopar("profile", str(onnx_file), "--top", "5", "-o", str(profile))
    for plan, options in PLANS.items():
        for load in LOADS:
            common = ["--profile", str(profile), "--requests", str(requests), "--concurrency", str(load)]
            mopar("bench", str(onnx_file), *common, *options, "-o", str(out / f"{model}.{plan}.c{load}.json"))


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def _load(out: Path, model: str, plan: str, load: int) -> dict[str, Any] | None:
    path = out / f"{model}.{plan}.c{load}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _functions(r: dict[str, Any]) -> str:
    parts = [k for k in r["plan"]["subslices"] if k > 1]
    text = f"{r['plan']['slices']}" + (f" ({'+'.join(map(str, parts))}-way)" if parts else "")
    return f"{text}: {r['partitioned']['functions']}"


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _memory(*figures: dict[str, Any]) -> str:
    return " / ".join(" ".join(map(str, f["memory_mb"]["lambda"])) for f in figures)


def _against(predicted: dict[str, Any], figure: str, measured: str, error: str, digits: int) -> str:
    return f"{predicted[figure]:.{digits}f} / {predicted[measured]:.{digits}f} ({predicted[error]:.2f})"


def render(out: Path, requests: int, models: list[str], command: str = "") -> str:
    latency_rows, cost_rows, predicted_rows, load_rows, limit_rows = [], [], [], [], []
    vs_peer_cost: dict[str, float] = {}
    machine: dict[str, Any] = {}
    tables = ("lambda", "lambda-cpu-scaled", "knative")
    for model in models:
        for plan in PLANS:
            r = _load(out, model, plan, 1)
            if r is None:
                continue
            machine = r["machine"]
            peer, whole, ours, vs = r["peer"], r["whole"], r["partitioned"], r["ratios"]["vs_peer"]
            predicted = r["predicted"]
            compute = whole["slices"][0].get("compute_ms") or 0.0
            latency_rows.append(
                row(
                    model,
                    plan,
                    _functions(r),
                    f"{peer['p50_ms']:.1f}",
                    f"{whole['p50_ms']:.1f} ({vs['whole']['latency_p50']:.3f}x)",
                    f"{ours['p50_ms']:.1f} ({vs['partitioned']['latency_p50']:.3f}x)",
                    f"{compute / peer['p50_ms']:.3f}",
                )
            )
            costs = [f"{vs['whole']['cost'][t]:.2f} / {vs['partitioned']['cost'][t]:.2f}" for t in tables]
            cost_rows.append(row(model, plan, _functions(r), *costs, _memory(peer, whole, ours)))
            if plan == "cost":
                vs_peer_cost[model] = vs["partitioned"]["cost"]["lambda"]
            predicted_rows.append(
                row(
                    model,
                    plan,
                    _against(predicted["whole"], "latency_ms", "measured_latency_ms", "latency_error", 1),
                    _against(predicted["partitioned"], "latency_ms", "measured_latency_ms", "latency_error", 1),
                    _against(
                        predicted["whole"], "cost_per_million_usd", "measured_cost_per_million_usd", "cost_error", 3
                    ),
                    _against(
                        predicted["partitioned"],
                        "cost_per_million_usd",
                        "measured_cost_per_million_usd",
                        "cost_error",
                        3,
                    ),
                )
            )
            limit = r["limit"]
            if plan == "cost":
                limit_rows.append(
                    row(
                        model,
                        f"{limit['saving']:.2f}x",
                        f"{limit['plan_saving']:.2f}x ({limit['share_reached']:.0%})",
                        f"{limit['measured_saving']:.2f}x ({limit['measured_share_reached']:.0%})",
                    )
                )
            loaded = _load(out, model, plan, 4)
            if loaded is not None:
                p, w, o = loaded["peer"], loaded["whole"], loaded["partitioned"]
                load_rows.append(
                    row(
                        model,
                        plan,
                        _functions(loaded),
                        f"{p['throughput_rps']:.2f}",
                        f"{w['throughput_rps']:.2f}",
                        f"{o['throughput_rps']:.2f}",
                        f"{o['throughput_rps'] / w['throughput_rps']:.2f}x",
                        f"{p['p99_ms']:.0f} / {w['p99_ms']:.0f} / {o['p99_ms']:.0f}",
                    )
                )
    geomean = _geomean(list(vs_peer_cost.values()))
    lines = [
        "# Benchmark results",
        "",
        "Every figure comes from one `mopar bench` run that serves three things at once on this machine and",
        "sends them the same requests in turns (peer, whole, partitioned, peer, ...), so the machine's drift",
        "hits all three alike:",
        "",
        "- **peer**: the model whole in plain onnxruntime with its default options and one intra-op thread,",
        "  timed at `run()` in its own process (no HTTP at all): what a user would run instead;",
        "- **whole**: the model as one slice behind mopar's gateway, over HTTP with binary tensors;",
        "- **partitioned**: the plan's slices, one worker process each, behind the same gateway.",
        "",
        f"{requests} requests each after 3 warm-up requests. Costs use each function's measured peak RSS rounded",
        "up to the platform's step and its measured median handling time; the peer is one function of its",
        "peak RSS for its median `run()` time.",
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
        "which runs, per model, `mopar bench MODEL.onnx --profile P --requests N --concurrency C` for the cost",
        "plan and for `--objective latency --max-slices 24 --max-split 2` (on this machine's two cores), at",
        "concurrency 1 and 4.",
        "",
        "## Latency against the peer (concurrency 1)",
        "",
        "p50 ms; in brackets the ratio to the peer (lower is faster). `compute / peer`: the whole model's",
        "onnxruntime time inside mopar's worker over the peer's `run()` time.",
        "",
        "| model | plan | slices: functions | peer p50 | whole p50 | partitioned p50 | compute / peer |",
        "|---|---|---|---|---|---|---|",
        *latency_rows,
        "",
        "## Cost against the peer (concurrency 1)",
        "",
        "Peer / whole and peer / partitioned cost per million requests, per pricing table (higher: mopar is",
        "cheaper); memory MB per function under Lambda: peer / whole / partitioned.",
        "",
        "| model | plan | slices: functions | lambda | lambda-cpu-scaled | knative | memory MB |",
        "|---|---|---|---|---|---|---|",
        *cost_rows,
        "",
        f"Geometric mean of peer / partitioned under Lambda, cost plans: **{geomean:.2f}x**.",
        "",
        "## Predicted beside measured",
        "",
        "What the plan predicted / what was measured (measured / predicted in brackets), p50 ms and $ per",
        "million requests under the plan's pricing (Lambda).",
        "",
        "| model | plan | whole ms | partitioned ms | whole $/M | partitioned $/M |",
        "|---|---|---|---|---|---|",
        *predicted_rows,
        "",
        "## The attainable saving",
        "",
        "GB-seconds of the model served whole over those of the limit no partition can pass (every node its",
        "own function: the runtime, its weights and activations for its own time, 128 MB floor, no transfer,",
        "no request fee); what the cost plan reaches, predicted and measured, and its share of the attainable.",
        "",
        "| model | attainable | cost plan, predicted | cost plan, measured |",
        "|---|---|---|---|",
        *limit_rows,
        "",
        "## Throughput under load (concurrency 4)",
        "",
        "Requests per second each serving sustained with four in flight on the same two cores (the peer runs",
        "four `run()` calls at once in threads), the partitioned / whole ratio, and p99 ms.",
        "",
        "| model | plan | slices: functions | peer rps | whole rps | partitioned rps | partitioned / whole "
        "| p99 ms peer / whole / part. |",
        "|---|---|---|---|---|---|---|---|",
        *load_rows,
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
            measure(model, path, out, args.requests)
            print(f"{model}: {time.monotonic() - started:.0f} s", flush=True)
    command = f"python benchmarks/run_zoo.py --requests {args.requests}" + "".join(
        f" \\\n    --extra {e}" for e in args.extra
    )
    if args.extra:  # the PyTorch exports, written first by exports.py (in a venv with torch)
        command = "python benchmarks/exports.py benchmarks/results/work/exports\n" + command
    text = render(out, args.requests, [m for m, _ in runs], command)
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    (HERE / "RESULTS.md").write_text(text + "\n")
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
