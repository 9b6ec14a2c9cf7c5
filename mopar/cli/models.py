"""`mopar models list|build`: the built-in zoo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from mopar.cli.console import err, out
from mopar.errors import UsageError
from mopar.model import zoo

if TYPE_CHECKING:
    from rich.console import JustifyMethod


class _ZooRow(TypedDict):
    name: str
    category: str
    params: int
    published_params: int | None


def list_models(args: argparse.Namespace) -> int:
    rows: list[_ZooRow] = [
        {
            "name": m.name,
            "category": m.category,
            "params": zoo.architecture_params(m.name),
            "published_params": m.published_params,
        }
        for m in zoo.MODELS
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.table import Table

    table = Table(title="mopar model zoo (random weights, seed 0; full size)")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("name", "left"),
        ("category", "left"),
        ("params", "right"),
        ("published", "right"),
        ("diff", "right"),
        ("architecture", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for row, model in zip(rows, zoo.MODELS):
        published = row["published_params"]
        diff = "-" if not published else f"{100 * (row['params'] - published) / published:+.2f} %"
        table.add_row(
            model.name,
            model.category,
            f"{row['params']:,}",
            f"{published:,}" if published else "n/a",
            diff,
            model.description,
        )
    out.print(table)
    return 0


def build_model(args: argparse.Namespace) -> int:
    options = dict(_option(text) for text in args.set)
    model = zoo.build(args.name, scale=args.scale, seed=args.seed, **options)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save_model(model, str(path))
    err.print(
        f"wrote {path} ({args.name}, {zoo.count_params(model):,} parameters, {path.stat().st_size / 2**20:,.1f} MB)"
    )
    return 0


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--set wants KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value
