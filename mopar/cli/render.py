"""`mopar render PM.yaml`: the Kubernetes objects the operator would create, as one YAML stream.

Everything the pods reference is in it: the plan ConfigMap they mount (the manifest, cut here
from the model, or given with --plan manifest.json) and the Secret they read their Redis URL
from, as a reference to be supplied (its name, key and form; never a password). Plain YAML
without anchors, so GitOps tools and reviewers read every object whole. With --uid the
objects name the PartitionedModel as their owner, as the operator's do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mopar.cli.console import err, progress
from mopar.errors import UsageError
from mopar.operator import names
from mopar.operator import units as deployed
from mopar.operator.credentials import secret_reference
from mopar.operator.jobs import build_prepare_job
from mopar.operator.serving import build_plan_configmap, build_serving
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, GROUP, KIND, KNATIVE, VERSION, ModelSpec, parse
from mopar.plan import planfile
from slice_runtime import manifest as manifests

SUPPLY_ANNOTATION = f"{names.PREFIX}/supply"


class _PlainDumper(yaml.SafeDumper):
    """A dumper that writes a value shared by two objects twice instead of as an anchor."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def run(args: argparse.Namespace) -> int:
    settings = OperatorSettings.from_env()
    documents = _load_models(Path(args.file))
    if args.uid and len(documents) > 1:
        raise UsageError(f"{args.file}: --uid names one PartitionedModel's owner; the file holds {len(documents)}")
    rendered: list[dict[str, Any]] = []
    for document in documents:
        meta = document.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise UsageError(f"{args.file}: a {KIND} needs metadata.name")
        spec = parse(document.get("spec"), name)
        uid = args.uid or meta.get("uid", "")
        owner = {"name": name, "namespace": meta.get("namespace") or args.namespace, "uid": uid}
        serving = DEPLOYMENT if spec.serving == DEPLOYMENT else KNATIVE
        spec.check_serving(serving)
        units, manifest_json = _prepared(spec, args)
        rendered += [
            build_secret_reference(owner, spec),
            build_plan_configmap(owner, manifest_json, spec.prepare_hash()),
            build_prepare_job(owner, spec, settings),
            *build_serving(owner, spec, units, serving, settings),
        ]
    sys.stdout.write(yaml.dump_all(rendered, Dumper=_PlainDumper, sort_keys=False))
    return 0


def check_plan_matches(spec: ModelSpec, plan: Mapping[str, Any], where: str) -> None:
    """A plan (or a manifest's) made under other settings than the spec's would deploy a model
    the spec does not describe: refuse it, naming the first field that differs."""
    made = plan.get("constraints") or {}
    fields = [
        ("spec.objective", spec.objective, plan.get("objective")),
        ("spec.sloMs", spec.slo_ms, made.get("slo_ms")),
        ("spec.maxSlices", spec.max_slices, made.get("max_slices")),
        ("spec.split", spec.split, made.get("split")),
        ("spec.maxSplit", spec.max_split, made.get("max_split")),
        ("spec.pricing", spec.pricing, (plan.get("pricing") or {}).get("name")),
        ("spec.memory.minMiB", spec.min_memory_mib, made.get("min_slice_memory_mb")),
        ("spec.memory.maxMiB", spec.max_memory_mib, made.get("max_slice_memory_mb")),
        ("spec.maxBatchSize", spec.max_batch_size, made.get("max_batch")),
    ]
    for field, wanted, planned in fields:
        if wanted != planned and not (isinstance(wanted, int | float) and isinstance(planned, int | float)
                                      and float(wanted) == float(planned)):  # fmt: skip
            raise UsageError(f"{where} was planned with {field.rsplit('.', 1)[1]} {planned!r}, "
                             f"but {field} is {wanted!r}: plan again for this spec")  # fmt: skip


def build_secret_reference(owner: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """The Secret the pods read their Redis URL from, without data: what to put in it."""
    reference = secret_reference(owner, spec)
    if spec.transport.redis_url:  # no Secret: the URL is in the spec; say so instead of inventing one
        reference = {"name": names.redis_secret_name(owner["name"]), "key": "url"}
    metadata = names.metadata(reference["name"], owner, "credentials")
    metadata["annotations"] = {
        SUPPLY_ANNOTATION: f"key {reference['key']}: the Redis URL of this model's pods, "
        f"redis://USER:PASSWORD@HOST:6379/0 (the operator creates the user and fills it in)"
    }
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


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


def _prepared(spec: ModelSpec, args: argparse.Namespace) -> tuple[list[deployed.SliceUnit], str]:
    """The slice functions and the manifest the plan ConfigMap holds: from --plan manifest.json,
    else cut here from the model by --plan plan.json or by planning it here."""
    plan: dict[str, Any] | None = None
    if args.plan:
        try:
            data = json.loads(Path(args.plan).read_text())
        except FileNotFoundError:
            raise UsageError(f"{args.plan}: no such file") from None
        except json.JSONDecodeError as error:
            raise UsageError(f"{args.plan}: not JSON ({error})") from None
        if isinstance(data, dict) and data.get("format") == manifests.FORMAT:
            manifest = manifests.parse(data, where=args.plan)
            check_plan_matches(spec, manifest.plan, args.plan)
            return deployed.units_from_manifest(manifest), manifest.dumps(compact=True)
        plan = planfile.load(args.plan)
        check_plan_matches(spec, plan, args.plan)
    what = "the plan ConfigMap's manifest is cut from the model" if plan else "the model is planned here"
    if args.model is None and spec.scheme not in ("zoo", "http", "https", "s3"):
        raise UsageError(f"cannot reach {spec.storage_uri} from here ({what}); give --model FILE or "
                         f"--plan manifest.json")  # fmt: skip
    if args.model is None and spec.scheme != "zoo" and not args.fetch:
        raise UsageError(f"render reaches no network unless asked: {spec.storage_uri} is downloaded with --fetch "
                         f"({what}); or give --model FILE or --plan manifest.json")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mopar-render-") as tmp:
        from mopar.model.modelfile import load_model
        from mopar.model.storage import fetch
        from mopar.operator.prepare import plan_spec
        from mopar.slice.slicer import slice_model

        path = Path(args.model) if args.model else asyncio.run(fetch(spec.storage_uri, Path(tmp)))
        if plan is None:
            with progress(f"planning {spec.served_name}") as report:
                model, _, plan = plan_spec(spec, path, progress=report)
            err.print(f"planned {len(plan['slices'])} slice(s) for {spec.served_name}")
        else:
            model = replace(load_model(path, spec.input_shapes), name=spec.served_name)
        manifest = slice_model(model, plan, Path(tmp) / "slices")
    return deployed.units_from_manifest(manifest), manifest.dumps(compact=True)
