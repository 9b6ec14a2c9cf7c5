"""The `mopar` command: one parser, one subcommand per stage of the flow.

Each subcommand names the module that runs it; that module is imported only when
the subcommand runs, so `mopar worker` never loads kopf or the planner.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from mopar import __version__
from mopar.plan import pricing as pricing_tables
from mopar.plan.pricing import DEFAULT_MAX_CPU
from slice_runtime.options import COUNT, add_gateway_arguments, add_serve_arguments, add_worker_arguments, number

# Numeric options are finite and in range (`--slo-ms nan`, `--dominance -1` are usage errors).
POSITIVE = number(float, above=0)
SHARE = number(float, 0, 1)
SCALE = number(float, above=0, maximum=1)
AT_LEAST_0 = number(int, 0)
AT_LEAST_0F = number(float, 0)

# The keys of slice_runtime.sessions.OPTIMIZATION_LEVELS, named here so that parsing
# the command line does not import onnxruntime.
OPTIMIZATIONS = ("disable", "basic", "extended", "all")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help="fix a symbolic input dimension, e.g. input=1x3x224x224 (repeatable)",
    )


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=COUNT, default=1, help="onnxruntime intra-op threads (default 1: one vCPU)")
    parser.add_argument(
        "--optimization",
        choices=OPTIMIZATIONS,
        default="all",
        help="onnxruntime graph optimisation level (default all)",
    )


def _add_max_threads_option(parser: argparse.ArgumentParser) -> None:
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--max-threads",
        type=COUNT,
        metavar="N",
        help=f"profile node times at 1, 2, 4, … and N intra-op threads (default {cores}: this machine's cores, "
        "at most)",
    )


def _add_plan_options(plan: argparse.ArgumentParser, local: bool = False) -> None:
    """The planner's options; `local` for commands that serve on this machine (its cores bound
    how many functions run at once)."""
    plan.add_argument("--profile", help="profile.json of this model (default: profile it now)")
    _add_max_threads_option(plan)
    plan.add_argument(
        "--objective",
        choices=("cost", "latency", "slo"),
        default="cost",
        help="minimise cost per request (default), end-to-end latency, or cost within --slo-ms",
    )
    plan.add_argument("--slo-ms", type=POSITIVE, help="latency bound for --objective slo")
    plan.add_argument("--max-slices", type=COUNT, default=8, help="at most this many slices (default 8)")
    plan.add_argument(
        "--slices",
        type=COUNT,
        metavar="N",
        help="exactly N slices, cut where the objective is best (e.g. to fit nodes)",
    )
    plan.add_argument("--min-slice-memory", type=COUNT, metavar="MB", help="allocate at least this much per slice")
    plan.add_argument("--max-slice-memory", type=COUNT, metavar="MB", help="no slice may need more than this")
    plan.add_argument("--no-split", action="store_true", help="never split dominant operators into sub-slices")
    plan.add_argument("--max-split", type=COUNT, default=8, help="at most this many parallel sub-slices (default 8)")
    plan.add_argument(
        "--dominance",
        type=SHARE,
        default=0.05,
        help="share of the model's weights or time that makes an operator dominant (default 0.05)",
    )
    plan.add_argument("--max-cut-tensors", type=COUNT, default=4, help="at most this many tensors cross a cut")
    plan.add_argument(
        "--pricing",
        default=pricing_tables.DEFAULT,
        help=f"how functions are billed and sized: {', '.join(pricing_tables.BUILTIN)} "
        f"(default {pricing_tables.DEFAULT}), or a YAML/JSON pricing file",
    )
    plan.add_argument("--min-cpu", type=POSITIVE, metavar="VCPUS", help="give each slice at least this many vCPUs")
    plan.add_argument(
        "--max-cpu",
        type=POSITIVE,
        metavar="VCPUS",
        help=f"give each slice at most this many vCPUs (default: --cores where given, else {DEFAULT_MAX_CPU:g})",
    )
    plan.add_argument("--link", metavar="FILE", help="link model from `mopar calibrate` (default: the reference one)")
    plan.add_argument(
        "--max-batch",
        type=COUNT,
        metavar="N",
        help="largest batch a request may carry, for a model with a symbolic batch: slices are sized for it "
        "(default: the batch profiled, 1 unless --input-shape says otherwise)",
    )
    cores = os.cpu_count() or 1
    plan.add_argument(
        "--cores",
        type=COUNT,
        metavar="N",
        default=cores if local else None,
        help=f"vCPUs that can run at once (default {cores}: this machine's)"
        if local
        else "vCPUs that can run at once (default: unbounded, every function its own, as in a cluster)",
    )
    _add_runtime_options(plan)
    _add_model_options(plan)


def _add_tolerance_options(parser: argparse.ArgumentParser) -> None:
    """How far partitioned outputs may be from the whole model's (mopar.slice.verify's rule)."""
    parser.add_argument(
        "--rtol",
        type=AT_LEAST_0F,
        help="allowed max |diff| of a float output, relative to its largest |value| (default 1e-4 for float32)",
    )
    parser.add_argument("--atol", type=AT_LEAST_0F, help="allowed max |diff| on top (default 1e-5 for float32)")


def _add_worker_host_option(parser: argparse.ArgumentParser, text: str, repeatable: bool = False) -> None:
    parser.add_argument(
        "--worker-host",
        action="append" if repeatable else "store",
        default=[] if repeatable else None,
        metavar="NETNS=ADDRESS",
        help=f"{text}: a network namespace and the address workers listen on there (as "
        "`mopar.bench.topology` builds them; run this command in the gateway's namespace)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mopar",
        description="Partitioned deep-learning inference: profile, plan, slice and serve ONNX models.",
    )
    parser.add_argument("--version", action="version", version=f"mopar {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    models = commands.add_parser("models", help="the built-in model zoo")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    models_commands.required = True
    listing = models_commands.add_parser("list", help="list the zoo's models")
    listing.add_argument("--json", action="store_true", help="print [{name, category, params, published_params}]")
    listing.set_defaults(run="mopar.cli.models:list_models")
    build = models_commands.add_parser("build", help="write a zoo model as an ONNX file")
    build.add_argument("name", help="zoo model name (see `mopar models list`)")
    build.add_argument("-o", "--output", required=True, help="ONNX file to write")
    build.add_argument("--scale", type=SCALE, default=1.0, help="width multiplier in (0, 1]; 1 is the published size")
    build.add_argument("--seed", type=AT_LEAST_0, default=0, help="weight seed (default 0)")
    build.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model option, e.g. layers=2 or image=128 (repeatable)",
    )
    build.set_defaults(run="mopar.cli.models:build_model")

    profile = commands.add_parser("profile", help="per-node latency, memory and FLOPs of a model")
    profile.add_argument("model", help="ONNX model file")
    profile.add_argument("--runs", type=COUNT, default=10, help="recorded runs; medians are reported (default 10)")
    profile.add_argument("--warmup", type=AT_LEAST_0, default=2, help="unrecorded runs first (default 2)")
    _add_runtime_options(profile)
    _add_max_threads_option(profile)
    _add_model_options(profile)
    profile.add_argument("-o", "--output", help="write profile.json here")
    profile.add_argument("--plot", metavar="FILE.png", help="draw per-layer latency and memory")
    profile.add_argument("--top", type=AT_LEAST_0, default=20, help="table rows: the N slowest nodes (0: all)")
    profile.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory measurement")
    profile.set_defaults(run="mopar.cli.profile:run")

    plan = commands.add_parser("plan", help="partition plan: slices, sub-slices, predicted cost and latency")
    plan.add_argument("model", help="ONNX model file")
    _add_plan_options(plan)
    plan.add_argument("-o", "--output", help="write plan.json here")
    plan.set_defaults(run="mopar.cli.plan:run")

    slicing = commands.add_parser("slice", help="write slice ONNX files and DIR/manifest.json from a plan")
    slicing.add_argument("model", help="ONNX model file (the one the plan was made for)")
    slicing.add_argument("--plan", required=True, help="plan.json from `mopar plan`")
    slicing.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the slices")
    _add_model_options(slicing)
    slicing.set_defaults(run="mopar.cli.slice:run")

    check = commands.add_parser(
        "verify", help="compare the partitioned model with the whole one; exit 1 if they differ"
    )
    check.add_argument("directory", metavar="DIR", help="directory written by `mopar slice`")
    check.add_argument("--model", required=True, help="the whole ONNX model")
    check.add_argument("--trials", type=COUNT, default=3, help="seeded random inputs to try (default 3)")
    check.add_argument("--seed", type=AT_LEAST_0, default=0, help="first seed (default 0)")
    check.add_argument(
        "--optimization", choices=OPTIMIZATIONS, default="all", help="optimisation level of both runs (default all)"
    )
    _add_tolerance_options(check)
    check.set_defaults(run="mopar.cli.verify:run")

    calibrate = commands.add_parser("calibrate", help="measure the link model: codecs, store, control calls")
    calibrate.add_argument(
        "--transport",
        "--redis",
        dest="transport",
        default="redis://127.0.0.1:6379/0",
        help="the store to measure: a redis:// URL (default redis://127.0.0.1:6379/0) or shm",
    )
    _add_worker_host_option(calibrate, "measure the slice calls to workers on this host, across its link")
    calibrate.add_argument("--repeat", type=int, default=15, help="round trips per payload size (default 15)")
    calibrate.add_argument("-o", "--output", required=True, help="write the link model (JSON) here")
    calibrate.set_defaults(run="mopar.cli.calibrate:run")

    serve = commands.add_parser("serve", help="serve sliced model locally: gateway + one worker per slice")
    add_serve_arguments(serve)
    serve.set_defaults(run="slice_runtime.local:main")

    worker = commands.add_parser("worker", help="serve one slice (in-cluster entry point)")
    add_worker_arguments(worker)
    worker.set_defaults(run="slice_runtime.worker.entry:main")

    gateway = commands.add_parser("gateway", help="the V2 inference gateway in front of slice workers")
    add_gateway_arguments(gateway)
    gateway.set_defaults(run="slice_runtime.gateway.entry:main")

    bench = commands.add_parser("bench", help="the model served whole and partitioned, same machine, same run")
    bench.add_argument("model", help="ONNX model file")
    _add_plan_options(bench, local=True)
    bench.add_argument("--requests", type=COUNT, default=50, help="measured requests per serving (default 50)")
    bench.add_argument("--concurrency", type=COUNT, default=1, help="requests in flight at once (default 1)")
    bench.add_argument("--warmup", type=AT_LEAST_0, default=3, help="unmeasured requests first (default 3)")
    bench.add_argument("--transport", default="shm", help="shm (default) or a redis:// URL")
    bench.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="auto|none|zstd:LEVEL",
        help="how the workers move tensors: auto (the plan's choice per tensor, default), none, zstd:LEVEL "
        "(e.g. zstd:3, zstd:-5+shuffle); repeat to serve the same slices once per codec, taking turns",
    )
    bench.add_argument(
        "--inline-kb",
        type=int,
        metavar="KB",
        help="tensors up to this many KiB travel inside the slice calls (default: the link model's, 1024); "
        "0: every tensor through the store",
    )
    _add_worker_host_option(bench, "run the workers on these hosts in turn", repeatable=True)
    bench.add_argument(
        "--batching",
        action="store_true",
        help="also serve whole and partitioned with dynamic batching (a model with a symbolic batch, --max-batch N)",
    )
    bench.add_argument(
        "--max-queue-delay-us",
        type=AT_LEAST_0,
        default=0,
        metavar="US",
        help="with --batching: microseconds a request may wait for others (default 0)",
    )
    bench.add_argument("--work-dir", help="keep the slice directories here (default: a temporary directory)")
    bench.add_argument("-o", "--output", help="write result.json here")
    bench.set_defaults(run="mopar.cli.bench:run")

    render = commands.add_parser("render", help="print the Kubernetes objects the operator would create")
    render.add_argument("file", metavar="PM.yaml", help="a PartitionedModel manifest")
    render.add_argument("--plan", help="plan.json or manifest.json to render (default: plan the model here)")
    render.add_argument("--model", help="a local copy of the model to plan and cut (instead of fetching storageUri)")
    render.add_argument(
        "--fetch", action="store_true", help="download an http(s):// or s3:// storageUri (default: reach no network)"
    )
    render.add_argument("--namespace", default="default", help="namespace where the manifest names none")
    render.add_argument("--uid", help="the PartitionedModel's uid: the objects name it as their owner")
    render.set_defaults(run="mopar.cli.render:run")

    operator = commands.add_parser("operator", help="run the Kubernetes operator (in-cluster entry point)")
    operator.add_argument("--namespace", action="append", default=[], help="watch only these (default: all)")
    operator.add_argument(
        "--health-port", type=number(int, 0, 65535), default=8081, help="liveness endpoint port (default 8081)"
    )
    operator.add_argument("--verbose", action="store_true")
    operator.set_defaults(run="mopar.cli.operator:run")

    prepare = commands.add_parser("prepare", help="fetch, profile, plan, slice and store a model (the prepare Job)")
    prepare.add_argument("--runs", type=COUNT, default=5, help="profiling runs (default 5)")
    _add_tolerance_options(prepare)
    prepare.set_defaults(run="mopar.cli.prepare:run")

    demo = commands.add_parser("demo", help="the whole flow on a built-in model, ending in a report")
    demo.add_argument("--model", default="vgg16", help="zoo model to run (default vgg16)")
    demo.add_argument("--scale", type=SCALE, default=1.0, help="width multiplier of the zoo model")
    demo.add_argument("--out", default="mopar-demo", help="directory for the demo's files (default ./mopar-demo)")
    demo.add_argument("--runs", type=COUNT, default=10, help="profiling runs (default 10)")
    _add_max_threads_option(demo)
    demo.add_argument("--requests", type=COUNT, default=20, help="requests sent to each serving (default 20)")
    demo.add_argument("--transport", default="shm", help="shm (default) or a redis:// URL")
    _add_tolerance_options(demo)
    demo.set_defaults(run="mopar.cli.demo:run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mopar.errors import MoparError
    from slice_runtime.errors import RuntimeFailure

    try:
        args = build_parser().parse_args(argv)
    except RuntimeFailure as error:  # a malformed MOPAR_* variable behind an option's default
        print(f"mopar: error: {error}", file=sys.stderr)
        return error.exit_code
    module_name, _, function_name = args.run.partition(":")
    # Imported late: a subcommand loads only what it needs.
    try:
        from mopar.cli.checks import check

        check(args)  # every argument, before any loading or profiling
        handler = getattr(importlib.import_module(module_name), function_name)
        return int(handler(args) or 0)
    except (MoparError, RuntimeFailure) as error:
        print(f"mopar: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mopar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
