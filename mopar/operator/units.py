"""The functions a model is deployed as (pure): one per slice and per sub-slice of a split slice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mopar.operator import names
from mopar.operator.settings import OperatorSettings
from mopar.plan import planfile
from slice_runtime import manifest as manifests


@dataclass(frozen=True)
class SliceUnit:
    """One function to deploy: a slice, or one sub-slice of a split slice."""

    id: str
    memory_mb: int
    group: str | None = None
    cpu: float | None = None  # vCPUs as planned (None: a plan of before CPU was planned: its threads)
    threads: int = 1  # intra-op threads as planned


def units_from_manifest(manifest: manifests.Manifest) -> list[SliceUnit]:
    return [SliceUnit(s.id, int(s.memory_mb or 0), s.group, s.cpu, s.threads) for s in manifest.slices]


def units_from_plan(plan: Mapping[str, Any]) -> list[SliceUnit]:
    """The functions a plan.json implies (what the slicer will write for it)."""
    units = []
    for planned in planfile.slices(plan):
        if planned.split is None:
            units.append(SliceUnit(planned.id, planned.memory_mb, None, planned.cpu, planned.threads))
        else:
            units += [
                SliceUnit(
                    manifests.subslice_id(planned.id, i), planned.memory_mb, planned.id, planned.cpu, planned.threads
                )
                for i in range(planned.split.k)
            ]
    return units


def slice_url(owner: Mapping[str, Any], unit: SliceUnit, settings: OperatorSettings) -> str:
    # Both a Knative Service and a plain Service answer on port 80 at their cluster DNS name.
    return f"http://{names.slice_name(owner['name'], unit.id)}.{owner['namespace']}.svc.{settings.cluster_domain}"
