"""`mopar slice MODEL --plan P -o DIR`, `mopar verify DIR --model MODEL`, `mopar calibrate`."""

from __future__ import annotations

import argparse

from rich.table import Table

from .. import planfile
from ..console import err, out, progress
from ..errors import VerificationError
from ..modelfile import load_model, parse_input_shape
from ..slicer import slice_model
from ..verify import TOLERANCE, verify


def slice_command(args: argparse.Namespace) -> int:
    plan = planfile.load(args.plan)
    shapes = {k: tuple(v) for k, v in plan.get("input_shapes", {}).items()}
    shapes.update(parse_input_shape(t) for t in args.input_shape)
    model = load_model(args.model, shapes)
    with progress(f"slicing {model.name}") as report:
        manifest = slice_model(model, plan, args.output, lambda done, total: report("slices", done, total))
    files = len(manifest["slices"])
    err.print(f"wrote {files} slice file{'s' if files != 1 else ''} and {args.output}/manifest.json")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from slice_runtime import manifest as manifests

    shapes = manifests.load(args.directory).raw["plan"].get("input_shapes", {})
    model = load_model(args.model, {k: tuple(v) for k, v in shapes.items()})
    with progress(f"verifying {model.name}") as report:
        result = verify(
            args.directory,
            model,
            trials=args.trials,
            seed=args.seed,
            optimization=args.optimization,
            progress=lambda done, total: report("trials", done, total),
        )
    table = Table(title=f"{model.name}: partitioned vs whole")
    for column in ("output", "max |diff|", "max relative", "within tolerance"):
        table.add_column(column, justify="left" if column == "output" else "right")
    for d in result.differences:
        table.add_row(d.output, f"{d.max_abs:.3g}", f"{d.max_rel:.3g}", "yes" if d.within else "[bold red]NO[/]")
    out.print(table)
    rtol, atol = TOLERANCE["float32"]
    out.print(
        f"{result.trials} seeded inputs, optimisation {args.optimization}; tolerance for float32: "
        f"rtol {rtol:g}, atol {atol:g}; integers and booleans exact"
    )
    if not result.ok:
        raise VerificationError("partitioned outputs differ from the whole model's beyond tolerance")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from ..calibration import calibrate

    err.print(f"measuring codecs, the store at {args.redis} and the per-slice overhead of real workers ...")
    model = calibrate(args.redis)
    model.save(args.output)
    out.print(
        f"store round trip {model.hop_ms:.3f} ms, {model.bytes_per_ms / 1e6:.2f} GB/s; "
        f"per-slice overhead {model.invoke_ms:.3f} ms; parallel efficiency of two sub-slices "
        f"{model.parallel_efficiency:.2f}"
    )
    for name, speed in model.codecs.items():
        out.print(
            f"  {name:16s} encode {speed.encode_bytes_per_ms / 1e6:6.2f} GB/s   "
            f"decode {speed.decode_bytes_per_ms / 1e6:6.2f} GB/s"
        )
    err.print(f"wrote {args.output}")
    return 0
