"""`mopar prepare`: what the prepare Job does for a PartitionedModel.

Fetch the model (`mopar.model.storage`), profile it, plan it under the spec's objective and
pricing, slice it, and store every slice file and the manifest in the artifact store by
sha256, the manifest also under the name `names.manifest_artifact(MODEL, PREPARE_HASH)`. The operator
reads it from there and writes the plan ConfigMap the slices mount: the Job needs no
Kubernetes API access at all (no service account token, no RBAC in model namespaces).
The slices are verified against the whole model (`mopar.slice.verify`) before anything is
stored: a partition that computes something else fails the Job. Idempotent: running it twice
for one spec stores the same things.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mopar.errors import UsageError, VerificationError
from mopar.model.modelfile import ModelFile, load_model
from mopar.model.storage import fetch
from mopar.operator import names
from mopar.operator.spec import ModelSpec
from mopar.plan import planfile
from mopar.plan.planner import Constraints
from mopar.plan.planning import plan_model
from mopar.profile.profiler import Profile, profile_model
from mopar.slice.slicer import slice_model
from mopar.slice.verify import verify
from slice_runtime import manifest as manifests
from slice_runtime.config import env_int
from slice_runtime.store.artifacts import ArtifactStore

log = logging.getLogger("mopar.prepare")


def plan_spec(
    spec: ModelSpec, path: Path, runs: int = 5, progress: Callable[[str, int, int], None] | None = None
) -> tuple[ModelFile, Profile, dict[str, Any]]:
    """A PartitionedModel's plan for the model at `path` (the prepare Job's and `mopar render`'s
    way): the model (named as the spec serves it), its profile and plan.json."""
    model = replace(load_model(path, spec.input_shapes), name=spec.served_name)
    # The Job profiles up to the cores its pod requests (the operator says how many).
    max_threads = env_int("MOPAR_PROFILE_THREADS", 1, minimum=1)
    profile = profile_model(
        model, runs=runs, threads=spec.runtime.threads or 1, progress=progress, max_threads=max_threads
    )
    constraints = Constraints(
        min_cpu=spec.cpu_bounds[0],
        max_cpu=spec.cpu_bounds[1],
        objective=spec.objective,
        slo_ms=spec.slo_ms,
        max_slices=spec.max_slices,
        min_slice_memory_mb=spec.min_memory_mib,
        max_slice_memory_mb=spec.max_memory_mib,
        split=spec.split,
        max_split=spec.max_split,
        max_batch=spec.max_batch_size,
    )
    plan = plan_model(model, profile, constraints, spec.pricing)
    shapes = {k: list(v) for k, v in spec.input_shapes.items()}
    return model, profile, planfile.to_json(plan, profile.model, profile.tensor_specs, shapes, profile.batch)


async def prepare(
    spec: ModelSpec,
    owner: dict[str, str],
    store_url: str,
    work: Path,
    runs: int = 5,
    rtol: float | None = None,
    atol: float | None = None,
) -> manifests.Manifest:
    """Prepare `spec` for the PartitionedModel `owner` ({name, namespace}); returns the manifest."""
    path = await fetch(spec.storage_uri, work / "model")
    log.info("profiling and planning %s", spec.storage_uri)
    model, _, data = plan_spec(spec, path, runs)
    log.info("planned %d slice(s); predicted cost ratio %.2fx", len(data["slices"]), data["predicted"]["cost_ratio"])
    manifest = slice_model(model, data, work / "slices")
    checked = verify(work / "slices", model, trials=2, threads=spec.runtime.threads or 1, rtol=rtol, atol=atol)
    if not checked.ok:
        worst = max(checked.differences, key=lambda d: d.max_abs - d.allowed)
        raise VerificationError(f"the slices differ from the whole model: output {worst.output} by "
                                f"{worst.max_abs:.3g}, beyond the {worst.allowed:.3g} allowed")  # fmt: skip
    with ArtifactStore(store_url, names.store_scope(owner)) as store:
        for entry in manifest.slices:
            for name, digest in entry.files():
                if store.put_file(work / "slices" / name) != digest:
                    raise UsageError(f"slice file {name} changed while it was stored")
        published = store.put(manifest.dumps(compact=True).encode())
        store.set_name(names.manifest_artifact(owner["name"], spec.prepare_hash()), published)
    log.info("published the manifest of %s (%d slice files)", owner["name"], len(manifest.slices))
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
        asyncio.run(prepare(spec, owner, store_url, Path(tmp), runs=args.runs, rtol=args.rtol, atol=args.atol))
    return 0
