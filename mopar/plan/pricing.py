"""What running a function costs under a pricing table (pure).

Three tables are built in; any of them can be replaced by a YAML or JSON file with the
same keys (`mopar plan --pricing FILE`):

- `lambda` (default; the accounting of the reference results): $0.20 per million
  invocations plus $0.0000166667 per GB-second, memory 128-10,240 MB in 1 MB steps,
  duration rounded up to 1 ms, one vCPU per function whatever its memory.
- `lambda-cpu-scaled`: the same prices, but a function gets memory / 1,769 MB of a vCPU,
  as Lambda really allocates CPU. Below 1,769 MB a function runs proportionally slower
  and costs the same GB-seconds, so every function is given at least 1,769 MB: each
  slice then pays for 1.77 GB, which is where partitioning stops paying.
- `knative`: CPU and memory requested and priced apart, at the list prices of a public
  Knative-based service (Google Cloud Run, request-based billing, tier 1: $0.000024 per
  vCPU-second, $0.0000025 per GiB-second, $0.40 per million requests, billed in 100 ms
  steps); one vCPU requested per function.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mopar.errors import PlanError, UsageError


@dataclass(frozen=True)
class Pricing:
    name: str
    request_usd: float  # per invocation
    gb_second_usd: float  # per GB (1,024 MB) of allocated memory per second
    vcpu_second_usd: float = 0.0  # per requested vCPU per second
    vcpus: float = 1.0  # CPU each function requests (and computes with)
    memory_min_mb: int = 128
    memory_max_mb: int = 10_240
    memory_step_mb: int = 1
    duration_step_ms: float = 1.0
    full_vcpu_mb: int | None = None  # CPU share = memory / this (lambda-cpu-scaled); None: a full vCPU
    source: str = ""

    def allocate_mb(self, needed_mb: float, what: str = "a function") -> int:
        """Memory to allocate for a function that needs `needed_mb`."""
        step = self.memory_step_mb
        memory = max(self.memory_min_mb, math.ceil(needed_mb / step) * step)
        if self.full_vcpu_mb is not None:
            memory = max(memory, math.ceil(self.full_vcpu_mb / step) * step)
        if memory > self.memory_max_mb:
            raise PlanError(
                f"{what} needs {needed_mb:,.0f} MB, above the {self.name} limit of {self.memory_max_mb:,} MB"
            )
        return memory

    def slowdown(self, memory_mb: int) -> float:
        """How much longer a run takes at `memory_mb` than with one full vCPU."""
        return max(1.0, self.full_vcpu_mb / memory_mb) if self.full_vcpu_mb else 1.0

    def billed_ms(self, duration_ms: float, memory_mb: int) -> float:
        """Billed duration of a run that takes `duration_ms` with one full vCPU."""
        duration_ms *= self.slowdown(memory_mb)
        step = self.duration_step_ms
        return max(step, math.ceil(duration_ms / step - 1e-9) * step)

    def invocation_usd(self, memory_mb: int, duration_ms: float) -> float:
        """Cost of one invocation of a function of `memory_mb` running `duration_ms`."""
        seconds = self.billed_ms(duration_ms, memory_mb) / 1000.0
        return self.request_usd + seconds * (
            memory_mb / 1024.0 * self.gb_second_usd + self.vcpus * self.vcpu_second_usd
        )

    def gb_seconds(self, memory_mb: int, duration_ms: float) -> float:
        return memory_mb / 1024.0 * self.billed_ms(duration_ms, memory_mb) / 1000.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


LAMBDA = Pricing(
    name="lambda",
    request_usd=0.20 / 1e6,
    gb_second_usd=0.0000166667,
    source="AWS Lambda x86 list prices: $0.20 per 1M requests, $0.0000166667 per GB-second, 1 ms billing",
)
LAMBDA_CPU_SCALED = Pricing(
    name="lambda-cpu-scaled",
    request_usd=0.20 / 1e6,
    gb_second_usd=0.0000166667,
    full_vcpu_mb=1769,
    source="AWS Lambda prices; CPU share = memory / 1,769 MB (one vCPU at 1,769 MB)",
)
KNATIVE = Pricing(
    name="knative",
    request_usd=0.40 / 1e6,
    gb_second_usd=0.0000025,
    vcpu_second_usd=0.000024,
    vcpus=1.0,
    duration_step_ms=100.0,
    memory_max_mb=32_768,
    source="Google Cloud Run (Knative Serving) request-based billing, tier 1 list prices, 100 ms billing steps",
)
BUILTIN = {p.name: p for p in (LAMBDA, LAMBDA_CPU_SCALED, KNATIVE)}


def load(name_or_path: str) -> Pricing:
    """A built-in table by name, or a table from a YAML/JSON file (unknown keys are an error)."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    path = Path(name_or_path)
    if not path.exists():
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
    base = BUILTIN.get(str(data.get("base", "lambda")), LAMBDA)
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
        return pricing
    except (TypeError, ValueError) as error:
        raise UsageError(f"{where}: {error}") from None
