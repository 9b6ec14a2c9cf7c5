"""`mopar verify DIR --model MODEL`: the partitioned model against the whole one; exit 1 if they differ."""

from __future__ import annotations

import argparse

from rich.table import Table

from mopar.cli.console import out, progress
from mopar.errors import VerificationError
from mopar.model.modelfile import load_model
from mopar.slice.verify import tolerance, verify


def run(args: argparse.Namespace) -> int:
    from slice_runtime import manifest as manifests

    shapes = manifests.load(args.directory).plan.get("input_shapes", {})
    model = load_model(args.model, {k: tuple(v) for k, v in shapes.items()})
    with progress(f"verifying {model.name}") as report:
        result = verify(
            args.directory,
            model,
            trials=args.trials,
            seed=args.seed,
            optimization=args.optimization,
            progress=lambda done, total: report("trials", done, total),
            rtol=args.rtol,
            atol=args.atol,
        )
    table = Table(title=f"{model.name}: partitioned vs whole")
    for column in ("output", "max |diff|", "relative to max |output|", "allowed |diff|", "within tolerance"):
        table.add_column(column, justify="left" if column == "output" else "right")
    for d in result.differences:
        within = "yes" if d.within else "[bold red]NO[/]"
        table.add_row(d.output, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}", f"{d.allowed:.3g}", within)
    out.print(table)
    rtol, atol = tolerance("float32", args.rtol, args.atol)
    out.print(
        f"{result.trials} seeded inputs, optimisation {args.optimization}; a float output is within tolerance "
        f"when max |diff| <= rtol x its largest |value| + atol (float32: rtol {rtol:g}, atol {atol:g}); "
        "integers and booleans exact"
    )
    if not result.ok:
        raise VerificationError("partitioned outputs differ from the whole model's beyond tolerance")
    return 0
