"""`mopar prepare`: what the prepare Job does for a PartitionedModel.

Fetch the model (storage.py), profile it, plan it under the spec's objective and
pricing, slice it, and store every slice file and the manifest in the artifact store by
sha256, the manifest also under the name `manifest/MODEL/PREPARE_HASH`. The operator
reads it from there and writes the plan ConfigMap the slices mount: the Job needs no
Kubernetes API access at all (no service account token, no RBAC in model namespaces).
Idempotent: running it twice for one spec stores the same things.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from slice_runtime.artifacts import ArtifactStore

from .errors import UsageError
from .pipeline import plan_spec
from .slicer import slice_model
from .spec import ModelSpec
from .storage import fetch

log = logging.getLogger("mopar.prepare")


def manifest_name(model: str, prepare_hash: str) -> str:
    """Where a prepared manifest is published in the artifact store."""
    return f"manifest/{model}/{prepare_hash}"


async def prepare(
    spec: ModelSpec,
    owner: dict[str, str],
    store_url: str,
    work: Path,
    runs: int = 5,
) -> dict[str, Any]:
    """Prepare `spec` for the PartitionedModel `owner` ({name, namespace}); returns the manifest."""
    path = await fetch(spec.storage_uri, work / "model")
    log.info("profiling and planning %s", spec.storage_uri)
    model, _, data = plan_spec(spec, path, runs)
    log.info("planned %d slice(s); predicted cost ratio %.2fx", len(data["slices"]), data["predicted"]["cost_ratio"])
    manifest = slice_model(model, data, work / "slices")
    with ArtifactStore(store_url, owner["namespace"]) as store:
        for entry in manifest["slices"]:
            files = [(entry["file"], entry["sha256"])]
            if entry.get("data_file"):
                files.append((entry["data_file"], entry["data_sha256"]))
            for name, digest in files:
                if store.put_file(work / "slices" / name) != digest:
                    raise UsageError(f"slice file {name} changed while it was stored")
        published = store.put(json.dumps(manifest, separators=(",", ":")).encode())
        store.set_name(manifest_name(owner["name"], spec.prepare_hash()), published)
    log.info("published the manifest of %s (%d slice files)", owner["name"], len(manifest["slices"]))
    return manifest


def main(args: argparse.Namespace) -> int:
    """The Job's entry point: everything from MOPAR_* variables the operator set."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        spec = ModelSpec.from_json(json.loads(os.environ["MOPAR_SPEC"]))
        owner = {k: os.environ[f"MOPAR_PM_{k.upper()}"] for k in ("name", "namespace")}
        store_url = os.environ["MOPAR_ARTIFACTS"]
    except KeyError as missing:
        raise UsageError(f"mopar prepare runs in the prepare Job; {missing} is not set") from None

    cache = os.environ.get("MOPAR_CACHE_DIR")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="mopar-prepare-", dir=cache) as tmp:
        asyncio.run(prepare(spec, owner, store_url, Path(tmp), runs=args.runs))
    return 0
