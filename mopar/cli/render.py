"""`mopar render PM.yaml`: the Kubernetes objects the operator would create, as one YAML stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mopar.cli.console import err, progress
from mopar.errors import UsageError
from mopar.operator import units as deployed
from mopar.operator.jobs import build_prepare_job
from mopar.operator.serving import build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, GROUP, KIND, KNATIVE, VERSION, ModelSpec, parse
from mopar.plan import planfile
from slice_runtime import manifest as manifests


def run(args: argparse.Namespace) -> int:
    settings = OperatorSettings.from_env()
    documents = _load_models(Path(args.file))
    rendered: list[dict[str, Any]] = []
    for document in documents:
        meta = document.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise UsageError(f"{args.file}: a {KIND} needs metadata.name")
        spec = parse(document.get("spec"), name)
        owner = {"name": name, "namespace": meta.get("namespace") or args.namespace, "uid": meta.get("uid", "")}
        units = _units(spec, args)
        serving = DEPLOYMENT if spec.serving == DEPLOYMENT else KNATIVE
        objects = [build_prepare_job(owner, spec, settings), *build_serving(owner, spec, units, serving, settings)]
        rendered += objects
    sys.stdout.write(yaml.safe_dump_all(rendered, sort_keys=False))
    return 0


def _load_models(path: Path) -> list[dict[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{path}: not YAML ({str(error).splitlines()[0]})") from None
    models = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not models:
        raise UsageError(f"{path}: no {KIND} ({GROUP}/{VERSION}) in it")
    for document in models:
        if document.get("apiVersion") != f"{GROUP}/{VERSION}":
            raise UsageError(f"{path}: apiVersion must be {GROUP}/{VERSION}, got {document.get('apiVersion')!r}")
    return models


def _units(spec: ModelSpec, args: argparse.Namespace) -> list[deployed.SliceUnit]:
    """The slice functions: from --plan (plan.json or manifest.json), else by planning the model here."""
    if args.plan:
        try:
            data = json.loads(Path(args.plan).read_text())
        except FileNotFoundError:
            raise UsageError(f"{args.plan}: no such file") from None
        except json.JSONDecodeError as error:
            raise UsageError(f"{args.plan}: not JSON ({error})") from None
        if isinstance(data, dict) and data.get("format") == manifests.FORMAT:
            return deployed.units_from_manifest(manifests.parse(data, where=args.plan))
        return deployed.units_from_plan(planfile.load(args.plan))
    return deployed.units_from_plan(_plan_here(spec, args.model))


def _plan_here(spec: ModelSpec, local: str | None) -> dict[str, Any]:
    from mopar.model.storage import fetch
    from mopar.operator.prepare import plan_spec

    if local is None and spec.scheme not in ("zoo", "http", "https"):
        raise UsageError(f"cannot reach {spec.storage_uri} from here; give --plan plan.json or --model FILE")
    with tempfile.TemporaryDirectory(prefix="mopar-render-") as tmp:
        path = Path(local) if local else asyncio.run(fetch(spec.storage_uri, Path(tmp)))
        with progress(f"planning {spec.served_name}") as report:
            _, _, data = plan_spec(spec, path, progress=report)
        err.print(f"planned {len(data['slices'])} slice(s) for {spec.served_name}")
        return data
