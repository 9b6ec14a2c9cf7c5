"""`mopar demo`: the whole flow on a built-in model, ending in a report."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from .. import zoo
from ..console import err, out, progress
from ..modelfile import load_model
from ..plotting import plot_profile
from ..profiling import profile_model
from .profile import profile_summary, profile_table


def run(args: argparse.Namespace) -> int:
    directory = Path(args.out)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"{args.model}.onnx"

    err.print(f"[bold]1. build[/] zoo model {args.model} (scale {args.scale}) -> {model_path}")
    onnx.save_model(zoo.build(args.model, scale=args.scale), str(model_path))
    model = load_model(model_path)

    err.print(f"[bold]2. profile[/] {model.name}: {args.runs} runs after warm-up, 1 thread")
    with progress("profiling") as report:
        profile = profile_model(model, runs=args.runs, progress=report)
    profile_path = directory / "profile.json"
    profile.save(profile_path)
    plot_path = plot_profile(profile, directory / "profile.png")

    out.print(profile_table(profile, top=15))
    out.print(profile_summary(profile))
    out.print(f"profile: {profile_path}\nplot:    {plot_path}")
    return 0
