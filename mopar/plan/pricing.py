"""What running a function costs under a pricing table, and what it may be given (pure).

A function is given an `Allocation`: memory and vCPUs, within the platform's rules; it runs
its sessions with the vCPUs rounded up as intra-op threads, and a fractional vCPU slows a run
proportionally (the kernel's CPU quota lets it run only that share of the time). Four tables
are built in, each encoding its platform's billing and request rules; any of them can be
replaced by a YAML or JSON file with the same keys (`mopar plan --pricing FILE`, `base:`
naming the table it starts from):

- `kubernetes` (the default; the platform mopar deploys to): a pod pays for the vCPU and
  memory it requests, per second. Built-in prices and rules are GKE Autopilot's
  general-purpose ones: $0.0445 per vCPU-hour, $0.0049225 per GiB-hour, CPU in quarter-vCPU
  steps, memory between 1 and 6.5 GiB per vCPU (less is rounded up; more needs more CPU),
  at least 512 MiB. A file gives a cluster's own prices (for example a node family's
  on-demand price split into vCPU and GiB).
- `lambda`: AWS Lambda x86 list prices ($0.20 per million requests, $0.0000166667 per
  GB-second, 1 ms steps, 128-10,240 MB) with CPU as AWS allocates it: memory / 1,769 MB of a
  vCPU, up to 6 vCPUs at 10,240 MB. More vCPUs cost more memory.
- `knative`: Google Cloud Run (Knative Serving) request-based billing, tier 1: $0.40 per
  million requests, $0.000024 per vCPU-second, $0.0000025 per GiB-second, 100 ms steps; 1, 2,
  4, 6 or 8 vCPUs with up to 4 GiB each.
- `lambda-flat`: MOPAR's accounting (Lambda's prices, one full vCPU whatever the memory), for
  comparison with the paper's figures only: no platform bills like this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mopar.errors import PlanError, UsageError

GIB_MB = 1024
DEFAULT_MAX_CPU = 4.0  # vCPUs a function may be given unless told (the operator's default too)


@dataclass(frozen=True)
class Allocation:
    """What one function is given: memory and vCPUs (its requested CPU or its CPU share)."""

    memory_mb: int
    vcpus: float

    @property
    def threads(self) -> int:
        """Intra-op threads: the vCPUs rounded up."""
        return max(1, math.ceil(self.vcpus - 1e-9))

    @property
    def slowdown(self) -> float:
        """How much longer a run on `threads` threads takes when it may use only `vcpus` of CPU."""
        return self.threads / self.vcpus if self.vcpus < self.threads else 1.0


@dataclass(frozen=True)
class Pricing:
    name: str
    request_usd: float  # per invocation
    gb_second_usd: float  # per GiB (1,024 MB) of allocated memory per second
    vcpu_second_usd: float = 0.0  # per allocated vCPU per second
    memory_min_mb: int = 128
    memory_max_mb: int = 10_240
    memory_step_mb: int = 1
    duration_step_ms: float = 1.0
    cpu_min: float = 0.25  # the smallest CPU request
    cpu_max: float = 8.0  # the largest
    cpu_step: float = 0.25  # requests are multiples of this
    cpu_sizes: tuple[float, ...] = ()  # the only sizes offered (Cloud Run: 1, 2, 4, 6, 8); empty: steps
    mb_per_vcpu_min: float = 0.0  # memory is raised to at least this per vCPU
    mb_per_vcpu_max: float | None = None  # memory above this per vCPU needs more vCPUs
    mb_per_vcpu: float | None = None  # CPU follows memory: vcpus = memory / this (Lambda: 1,769)
    source: str = ""

    def __post_init__(self) -> None:
        # A table read from JSON or YAML gives its sizes as a list.
        object.__setattr__(self, "cpu_sizes", tuple(float(c) for c in self.cpu_sizes))

    # -- what a function may be given --------------------------------------------
    def cpu_choices(self, min_cpu: float | None = None, max_cpu: float | None = None) -> list[float]:
        """The vCPU sizes this table offers within [min_cpu, max_cpu] (None: the table's own bounds)."""
        low = self.cpu_min if min_cpu is None else max(min_cpu, 0.0)
        high = self.cpu_max if max_cpu is None else min(max_cpu, self.cpu_max)
        if self.cpu_sizes:
            sizes = list(self.cpu_sizes)
        else:
            first = math.ceil(self.cpu_min / self.cpu_step - 1e-9)
            last = math.floor(self.cpu_max / self.cpu_step + 1e-9)
            sizes = [round(k * self.cpu_step, 6) for k in range(first, last + 1)]
        return [c for c in sizes if low - 1e-9 <= c <= high + 1e-9]

    def allocations(
        self, needed_mb: float, min_cpu: float | None = None, max_cpu: float | None = None
    ) -> list[Allocation]:
        """Every allocation of a function that needs `needed_mb` with vCPUs in [min_cpu, max_cpu]
        that the platform's rules allow, smallest CPU first."""
        base = self._round_mb(max(self.memory_min_mb, needed_mb))
        found: dict[tuple[int, float], Allocation] = {}
        if self.mb_per_vcpu:  # CPU follows memory: each CPU size is bought with memory
            cap = self.memory_max_mb / self.mb_per_vcpu
            sizes = [*self.cpu_choices(min_cpu, max_cpu), base / self.mb_per_vcpu, cap]
            for cpu in sizes:
                memory = max(base, self._round_mb(cpu * self.mb_per_vcpu))
                vcpus = round(min(memory / self.mb_per_vcpu, cap), 6)
                in_range = (min_cpu is None or vcpus >= min_cpu - 1e-9) and (max_cpu is None or vcpus <= max_cpu + 1e-9)
                if memory <= self.memory_max_mb and in_range:
                    found[(memory, vcpus)] = Allocation(memory, vcpus)
        else:
            for cpu in self.cpu_choices(min_cpu, max_cpu):
                memory = max(base, self._round_mb(cpu * self.mb_per_vcpu_min))
                if memory > self.memory_max_mb:
                    continue
                if self.mb_per_vcpu_max is not None and memory > cpu * self.mb_per_vcpu_max + 1e-9:
                    continue  # too much memory for this CPU: a larger size holds it
                found[(memory, cpu)] = Allocation(memory, cpu)
        return sorted(found.values(), key=lambda a: (a.vcpus, a.memory_mb))

    def allocation(self, needed_mb: float, what: str = "a function", min_cpu: float | None = None) -> Allocation:
        """The smallest allocation holding `needed_mb` (PlanError where none does)."""
        options = self.allocations(needed_mb, min_cpu)
        if not options:
            raise PlanError(
                f"{what} needs {needed_mb:,.0f} MB, above what the {self.name} table allows "
                f"(at most {self.memory_max_mb:,} MB)"
            )
        return options[0]

    def _round_mb(self, mb: float) -> int:
        step = self.memory_step_mb
        return int(math.ceil(mb / step - 1e-9) * step)

    # -- what a run costs ---------------------------------------------------------
    def billed_ms(self, duration_ms: float) -> float:
        step = self.duration_step_ms
        return max(step, math.ceil(duration_ms / step - 1e-9) * step)

    def resource_usd(self, allocation: Allocation, duration_ms: float) -> float:
        """Memory and CPU of a run of `duration_ms`, unrounded and without the request fee."""
        seconds = duration_ms / 1000.0
        return seconds * (allocation.memory_mb / GIB_MB * self.gb_second_usd + allocation.vcpus * self.vcpu_second_usd)

    def invocation_usd(self, allocation: Allocation, duration_ms: float) -> float:
        """One invocation as billed: the request fee and the billed duration's memory and CPU."""
        return self.request_usd + self.resource_usd(allocation, self.billed_ms(duration_ms))

    def gb_seconds(self, allocation: Allocation, duration_ms: float) -> float:
        return allocation.memory_mb / GIB_MB * self.billed_ms(duration_ms) / 1000.0

    def vcpu_seconds(self, allocation: Allocation, duration_ms: float) -> float:
        return allocation.vcpus * self.billed_ms(duration_ms) / 1000.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_sizes"] = list(self.cpu_sizes)
        return data


KUBERNETES = Pricing(
    name="kubernetes",
    request_usd=0.0,
    gb_second_usd=0.0049225 / 3600,
    vcpu_second_usd=0.0445 / 3600,
    memory_min_mb=512,
    memory_max_mb=110 * GIB_MB,
    # A pod is billed for the seconds it runs, not per request: a request's share is its own
    # time, unrounded (a microsecond step).
    duration_step_ms=0.001,
    cpu_min=0.25,
    cpu_max=28.0,
    cpu_step=0.25,
    mb_per_vcpu_min=1.0 * GIB_MB,
    mb_per_vcpu_max=6.5 * GIB_MB,
    source=(
        "GKE Autopilot general-purpose pods (cloud.google.com/kubernetes-engine/pricing, "
        "cloud.google.com/kubernetes-engine/docs/concepts/autopilot-resource-requests): $0.0445 per vCPU-hour, "
        "$0.0049225 per GiB-hour of requests, CPU in 0.25 vCPU steps, 1-6.5 GiB per vCPU, at least 512 MiB"
    ),
)
LAMBDA = Pricing(
    name="lambda",
    request_usd=0.20 / 1e6,
    gb_second_usd=0.0000166667,
    cpu_min=128 / 1769,
    cpu_max=6.0,
    mb_per_vcpu=1769.0,
    source=(
        "AWS Lambda x86 list prices (aws.amazon.com/lambda/pricing): $0.20 per 1M requests, $0.0000166667 per "
        "GB-second, 1 ms billing; CPU = memory / 1,769 MB of a vCPU, up to 6 vCPUs at 10,240 MB "
        "(docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html)"
    ),
)
KNATIVE = Pricing(
    name="knative",
    request_usd=0.40 / 1e6,
    gb_second_usd=0.0000025,
    vcpu_second_usd=0.000024,
    duration_step_ms=100.0,
    memory_max_mb=32 * GIB_MB,
    cpu_min=1.0,
    cpu_max=8.0,
    cpu_sizes=(1.0, 2.0, 4.0, 6.0, 8.0),
    mb_per_vcpu_max=4.0 * GIB_MB,
    source=(
        "Google Cloud Run (Knative Serving) request-based billing, tier 1 list prices (cloud.google.com/run/pricing): "
        "$0.40 per 1M requests, $0.000024 per vCPU-second, $0.0000025 per GiB-second, 100 ms steps; "
        "1, 2, 4, 6 or 8 vCPUs, up to 4 GiB per vCPU"
    ),
)
LAMBDA_FLAT = Pricing(
    name="lambda-flat",
    request_usd=0.20 / 1e6,
    gb_second_usd=0.0000166667,
    cpu_min=1.0,
    cpu_max=1.0,
    cpu_sizes=(1.0,),
    source=(
        "MOPAR's accounting (arXiv 2404.02445): AWS Lambda prices with one full vCPU whatever the memory; "
        "for comparison with the paper's figures, not a platform's bill"
    ),
)
BUILTIN = {p.name: p for p in (KUBERNETES, LAMBDA, KNATIVE, LAMBDA_FLAT)}
ALIASES = {"lambda-cpu-scaled": "lambda"}  # its earlier name
DEFAULT = KUBERNETES.name


def load(name_or_path: str) -> Pricing:
    """A built-in table by name, or a table from a YAML/JSON file (unknown keys are an error)."""
    name = ALIASES.get(name_or_path, name_or_path)
    if name in BUILTIN:
        return BUILTIN[name]
    path = Path(name_or_path)
    if not path.is_file():
        raise UsageError(f"--pricing: {name_or_path!r} is neither a built-in table ({', '.join(BUILTIN)}) nor a file")
    text = path.read_text()
    try:
        import yaml

        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse error is the file's problem
        raise UsageError(f"{path}: cannot read pricing table ({str(error).splitlines()[0]})") from None
    return from_mapping(data, str(path))


def from_mapping(data: Mapping[str, Any], where: str = "pricing table") -> Pricing:
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: a pricing table is a mapping of keys to numbers")
    base_name = str(data.get("base", DEFAULT))
    base = BUILTIN.get(ALIASES.get(base_name, base_name))
    if base is None:
        raise UsageError(f"{where}: base {base_name!r} is not a built-in table ({', '.join(BUILTIN)})")
    fields = set(Pricing.__dataclass_fields__)
    unknown = set(data) - fields - {"base"}
    if unknown:
        raise UsageError(f"{where}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(fields))}")
    values = {
        **asdict(base),
        "name": Path(where).stem,
        "source": where,
        **{k: v for k, v in data.items() if k != "base"},
    }
    try:
        pricing = Pricing(**values)
        if pricing.memory_min_mb <= 0 or pricing.memory_step_mb <= 0 or pricing.duration_step_ms <= 0:
            raise ValueError("memory and duration steps must be positive")
        if pricing.cpu_min <= 0 or pricing.cpu_max < pricing.cpu_min or pricing.cpu_step <= 0:
            raise ValueError("cpu_min and cpu_step must be positive and cpu_max at least cpu_min")
        if pricing.mb_per_vcpu is not None and pricing.mb_per_vcpu <= 0:
            raise ValueError("mb_per_vcpu must be positive")
        return pricing
    except (TypeError, ValueError) as error:
        raise UsageError(f"{where}: {error}") from None
