"""`mopar demo`: the whole flow on a built-in model, ending in a report.

build -> profile -> plan -> slice -> verify -> serve whole and partitioned -> requests ->
report. What it keeps in --out, for inspection, is what its last line lists: the model, its
profile.json and plot, plan.json, the slice directory with its manifest and bench.json. The
servings' own copies of the model and slices (gigabytes for VGG-16) live in a temporary
directory that goes when the demo ends.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import onnx

from mopar.bench.benchmark import bench, save
from mopar.cli.bench import result_table
from mopar.cli.console import err, out, progress
from mopar.cli.plan import make_plan, plan_table, predicted_table
from mopar.cli.profile import max_threads, profile_summary, profile_table
from mopar.errors import VerificationError
from mopar.model import zoo
from mopar.model.modelfile import load_model
from mopar.plan.planfile import to_json
from mopar.plan.planning import whole_plan
from mopar.profile.plotting import plot_profile
from mopar.profile.profiler import profile_model
from mopar.profile.scaling import thread_counts
from mopar.slice.slicer import slice_model
from mopar.slice.verify import verify


def _plan_options(model: Path, *options: str) -> argparse.Namespace:
    from mopar.cli.main import build_parser

    return build_parser().parse_args(["plan", str(model), "--cores", str(os.cpu_count() or 1), *options])


# The demo's SLO: this much above the model served whole on every core, as predicted. The
# plan meets it at the least CPU and memory: what is gained on a cluster without losing speed.
SLO_OVER_FASTEST_WHOLE = 1.1


def run(args: argparse.Namespace) -> int:
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"{args.model}.onnx"

    err.print(f"[bold]1/6 build[/] zoo model {args.model} (scale {args.scale}) -> {model_path}")
    onnx.save_model(zoo.build(args.model, scale=args.scale), str(model_path))
    model = load_model(model_path)

    counts = thread_counts(max_threads(args.max_threads))
    err.print(f"[bold]2/6 profile[/] {args.runs} runs after warm-up, at {', '.join(map(str, counts))} thread(s)")
    with progress("profiling") as report:
        profile = profile_model(model, runs=args.runs, progress=report, max_threads=counts[-1])
    profile.save(directory / "profile.json")
    plot = plot_profile(profile, directory / "profile.png")
    out.print(profile_table(profile, top=10))
    out.print(profile_summary(profile))

    fastest = make_plan(
        model, profile, _plan_options(model_path, "--objective", "latency", "--slices", "1"), whole_cpus=True
    )
    slo = round(SLO_OVER_FASTEST_WHOLE * fastest.latency_ms, 1)
    err.print(
        f"[bold]3/6 plan[/] objective slo: {slo:g} ms ({SLO_OVER_FASTEST_WHOLE:g}x the model served whole on "
        f"{fastest.slices[0].vcpus:g} vCPUs, predicted), Kubernetes pricing"
    )
    options = _plan_options(model_path, "--objective", "slo", "--slo-ms", str(slo))
    plan = make_plan(model, profile, options, whole_cpus=True)
    data = to_json(plan, profile.model, profile.tensor_specs, profile.settings.get("input_shapes", {}), profile.batch)
    (directory / "plan.json").write_text(json.dumps(data, indent=1) + "\n")
    out.print(plan_table(data))
    out.print(predicted_table(data))

    err.print(f"[bold]4/6 slice[/] -> {directory / 'slices'}")
    slice_model(model, data, directory / "slices")

    err.print("[bold]5/6 verify[/] partitioned vs whole on seeded inputs")
    report_ = verify(directory / "slices", model, trials=3, rtol=args.rtol, atol=args.atol)
    for difference in report_.differences:
        out.print(
            f"  output {difference.output}: max |diff| {difference.max_abs:.3g} "
            f"({difference.max_rel:.3g} of its largest |value|), "
            f"{'within' if difference.within else 'BEYOND'} tolerance ({difference.allowed:.3g})"
        )
    if not report_.ok:
        raise VerificationError("partitioned outputs differ from the whole model's")

    err.print(f"[bold]6/6 serve and measure[/] the peer, whole and partitioned, {args.requests} requests each in turns")
    whole = whole_plan(plan)
    with progress("serving") as report, tempfile.TemporaryDirectory(prefix="mopar-demo-") as work:
        result = bench(
            model,
            profile,
            plan,
            whole,
            requests=args.requests,
            transport=args.transport,
            work_dir=Path(work),
            progress=report,
        )
    save(result, directory / "bench.json")
    out.print(result_table(result))
    mismatched = result["whole"]["mismatched_outputs"] + result["partitioned"]["mismatched_outputs"]
    out.print(f"every response checked against onnxruntime on the whole model: {mismatched} mismatched")
    out.print(f"files: {directory}/ ({model_path.name}, profile.json, {plot.name}, plan.json, slices/, bench.json)")
    return 0 if mismatched == 0 else 1
