"""`mopar operator`, `mopar prepare` and `mopar render`: the Kubernetes side of the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .. import manifests
from ..console import err, progress
from ..errors import UsageError
from ..settings import OperatorSettings
from ..spec import GROUP, KIND, VERSION, ModelSpec, parse


def operator(args: argparse.Namespace) -> int:
    import logging

    import kopf

    from .. import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    namespaces = args.namespace or None
    asyncio.run(
        kopf.operator(
            clusterwide=namespaces is None,
            namespaces=namespaces or [],
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
            standalone=True,  # one replica; no peering objects to coordinate several
        )
    )
    return 0


def prepare(args: argparse.Namespace) -> int:
    from ..prepare import main

    return main(args)


def render(args: argparse.Namespace) -> int:
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
        serving = manifests.DEPLOYMENT if spec.serving == manifests.DEPLOYMENT else manifests.KNATIVE
        objects = [
            manifests.build_prepare_job(owner, spec, settings),
            *manifests.build_serving(owner, spec, units, serving, settings),
        ]
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


def _units(spec: ModelSpec, args: argparse.Namespace) -> list[manifests.SliceUnit]:
    """The slice functions: from --plan (plan.json or manifest.json), else by planning the model here."""
    if args.plan:
        data = json.loads(Path(args.plan).read_text())
        if data.get("format") == "mopar.manifest/v1":
            return manifests.units_from_manifest(data)
        return manifests.units_from_plan(data)
    return manifests.units_from_plan(_plan_here(spec, args.model))


def _plan_here(spec: ModelSpec, local: str | None) -> dict[str, Any]:
    from ..pipeline import plan_spec
    from ..storage import fetch

    if local is None and spec.scheme not in ("zoo", "http", "https"):
        raise UsageError(f"cannot reach {spec.storage_uri} from here; give --plan plan.json or --model FILE")
    with tempfile.TemporaryDirectory(prefix="mopar-render-") as tmp:
        path = Path(local) if local else asyncio.run(fetch(spec.storage_uri, Path(tmp)))
        with progress(f"planning {spec.served_name}") as report:
            _, _, data = plan_spec(spec, path, progress=report)
        err.print(f"planned {len(data['slices'])} slice(s) for {spec.served_name}")
        return data
