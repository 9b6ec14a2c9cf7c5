"""Every command's arguments, checked before any loading, profiling or serving.

`check(args)` runs right after parsing: a wrong --pricing, `--objective slo` without
--slo-ms or an output directory that does not exist is one line and exit 2 at once, not
after a minute of profiling. Each check uses the lookup of the module that owns the value
(the pricing tables' loader, the planner's constraints, the codec and host parsers), so the
two never disagree. Imports are local: `mopar worker` loads nothing of the planner.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mopar.errors import UsageError

if TYPE_CHECKING:
    from mopar.plan.planner import Constraints


def check(args: argparse.Namespace) -> None:
    """Raise UsageError naming the first argument of `args` that cannot work."""
    if hasattr(args, "input_shape"):
        from mopar.model.modelfile import parse_input_shape

        for text in args.input_shape:
            parse_input_shape(text)
    if hasattr(args, "pricing"):
        _plan_options(args)
    if args.command == "bench":
        _bench_options(args)
    if args.command == "calibrate":
        _calibrate_options(args)
    if args.command == "demo":
        from mopar.model import zoo

        zoo.get(args.model)
    _files(args)  # last: an option's mistake is named even where the model is missing too


def plan_constraints(args: argparse.Namespace) -> Constraints:
    """The planner's Constraints from the plan options in `args` (PlanError when they conflict)."""
    from mopar.plan.planner import Constraints

    return Constraints(
        objective=args.objective,
        slo_ms=args.slo_ms,
        max_slices=args.max_slices,
        min_slice_memory_mb=args.min_slice_memory,
        max_slice_memory_mb=args.max_slice_memory,
        split=not args.no_split,
        max_split=args.max_split,
        dominance=args.dominance,
        max_cut_tensors=args.max_cut_tensors,
        slices=args.slices,
        cores=args.cores,
        max_batch=args.max_batch,
        min_cpu=args.min_cpu,
        max_cpu=args.max_cpu,
    )


def _files(args: argparse.Namespace) -> None:
    """Files read must exist; files written must have a directory to go to."""
    read = {"profile": "--profile", "plan": "--plan", "file": "PM.yaml", "directory": "DIR"}
    if args.command == "render":  # render reads its spec first: a bad spec is named before a missing --plan
        del read["plan"]
    if args.command != "demo":  # the demo's --model is a zoo name
        read["model"] = "--model" if args.command in ("verify", "render") else "MODEL"
    for attribute, option in read.items():
        value = getattr(args, attribute, None)
        if isinstance(value, str) and not Path(value).exists():
            raise UsageError(f"{option}: {value}: no such file")
    for attribute in ("output", "plot"):
        value = getattr(args, attribute, None)
        if args.command != "slice" and isinstance(value, str):  # slice creates its -o DIR
            parent = Path(value).parent
            if not parent.is_dir():
                raise UsageError(f"{value}: no directory {parent} to write it in")


def _plan_options(args: argparse.Namespace) -> None:
    from mopar.cli.plan import load_link
    from mopar.plan import pricing

    pricing.load(args.pricing)  # the pricing module's own lookup: built-in names or a file
    plan_constraints(args)
    load_link(args.link)


def _bench_options(args: argparse.Namespace) -> None:
    from mopar.bench.topology import parse_host
    from mopar.bench.transfers import parse_codec

    try:
        for text in args.codec:
            parse_codec(text)
        for text in args.worker_host:
            parse_host(text)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.inline_kb is not None and args.inline_kb < 0:
        raise UsageError(f"--inline-kb must be 0 or more, got {args.inline_kb}")


def _calibrate_options(args: argparse.Namespace) -> None:
    from mopar.bench.topology import parse_host
    from slice_runtime.store import open_transport

    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")
    try:
        if args.worker_host:
            parse_host(args.worker_host)
        open_transport(args.transport, "calibrate", "link")  # the URL's form; nothing is contacted yet
    except ValueError as error:
        raise UsageError(str(error)) from None
