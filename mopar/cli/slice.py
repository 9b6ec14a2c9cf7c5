"""`mopar slice MODEL --plan P -o DIR`: slice files and DIR/manifest.json from a plan."""

from __future__ import annotations

import argparse

from mopar.cli.console import err, progress
from mopar.model.modelfile import load_model, parse_input_shape
from mopar.plan import planfile
from mopar.slice.slicer import slice_model


def run(args: argparse.Namespace) -> int:
    plan = planfile.load(args.plan)
    shapes = {k: tuple(v) for k, v in plan.get("input_shapes", {}).items()}
    shapes.update(parse_input_shape(t) for t in args.input_shape)
    model = load_model(args.model, shapes)
    with progress(f"slicing {model.name}") as report:
        manifest = slice_model(model, plan, args.output, lambda done, total: report("slices", done, total))
    files = len(manifest.slices)
    err.print(f"wrote {files} slice file{'s' if files != 1 else ''} and {args.output}/manifest.json")
    return 0
