"""The PartitionedModel spec, read and validated (pure).

The API server checks the CRD's structure; this module checks what a schema cannot
(an SLO objective without its SLO, bounds that contradict each other, credentials in
clear, settings a serving path cannot honour) and applies the CRD's defaults, so the
operator and `mopar render` see the same spec whether or not a server defaulted it.
Every mistake is one message naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mopar.errors import SpecError
from mopar.model.uris import StorageUri
from mopar.operator import fields
from mopar.operator.podsettings import SECURITY_CONTEXT, PodSettings, parse_pod_settings
from mopar.operator.scaling import (
    DEPLOYMENT,
    GATEWAY_TARGETS,
    KNATIVE,
    SLICE_TARGETS,
    Autoscaling,
    parse_autoscaling,
)
from mopar.plan import pricing as pricing_tables

GROUP = "mopar.dev"
VERSION = "v1alpha1"
PLURAL = "partitionedmodels"
KIND = "PartitionedModel"
# How slices are served (`spec.serving`; `auto` picks Knative where API discovery lists it).
SERVING_MODES = (KNATIVE, DEPLOYMENT, "auto")
# Knative's defaults (knative/serving v1.23.0 `pkg/apis/config/defaults.go`):
# max-revision-timeout-seconds and container-concurrency-max-limit.
MAX_TIMEOUT_SECONDS = 600
MAX_CONTAINER_CONCURRENCY = 1000
MAX_SLO_MS = 3_600_000.0  # an hour
MAX_MEMORY_MIB = 1_048_576  # 1 TiB
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 10_000_000  # ten seconds
# vCPUs per slice the planner may choose from (`spec.cpu`); the largest is the prepare Job's too.
MIN_CPU, MAX_CPU, CPU_CEILING = 0.25, pricing_tables.DEFAULT_MAX_CPU, 64.0
# Pricing tables (`spec.pricing`): the planner's own, by name (its aliases accepted too).
PRICING = tuple(pricing_tables.BUILTIN)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_CODEC = re.compile(r"^(auto|none|zstd-?[0-9]{1,2}(\+shuffle)?)$")
__all__ = ["DEPLOYMENT", "KNATIVE", "Autoscaling", "ModelSpec", "SpecError", "parse"]


@dataclass(frozen=True)
class Transport:
    redis_url: str | None = None
    secret_name: str | None = None
    secret_key: str = "url"
    codec: str = "auto"
    compression_threshold_bytes: int = 4096
    activation_ttl_seconds: int = 300


@dataclass(frozen=True)
class Gateway:
    """The gateway's own sizing: it only waits on its slices, so one pod holds many requests."""

    resources: Mapping[str, Any] | None = None
    container_concurrency: int = 0  # no hard limit: the autoscaler's target spreads the load
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    grpc: bool = False  # also serve the V2 gRPC service


@dataclass(frozen=True)
class Runtime:
    image: str | None = None
    pull_policy: str | None = None
    threads: int | None = None  # pins every slice's threads and vCPUs; None: the plan's, per slice
    gateway: Gateway = field(default_factory=Gateway)
    prepare_resources: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ModelSpec:
    storage_uri: str
    served_name: str
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    objective: str = "cost"
    slo_ms: float | None = None
    max_slices: int = 8
    split: bool = True
    max_split: int = 8
    pricing: str = pricing_tables.DEFAULT
    min_cpu: float = MIN_CPU  # vCPUs per slice the planner may choose from
    max_cpu: float = MAX_CPU
    min_memory_mib: int | None = None
    max_memory_mib: int | None = None
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    container_concurrency: int | None = None  # None: the concurrency target, else 1
    timeout_seconds: int = 60
    transport: Transport = field(default_factory=Transport)
    runtime: Runtime = field(default_factory=Runtime)
    pod: PodSettings = field(default_factory=PodSettings)
    serving: str = "auto"
    max_batch_size: int | None = None  # the largest batch a request may carry (None: the batch profiled)
    max_queue_delay_us: int | None = None  # dynamic batching's delay (None: no dynamic batching)

    @property
    def dynamic_batching(self) -> bool:
        return self.max_queue_delay_us is not None

    @property
    def scheme(self) -> str:
        return self.storage_uri.split("://", 1)[0]

    @property
    def pod_security_context(self) -> bool:
        """Whether Knative pods may carry a pod-level securityContext (the cluster enables it)."""
        return SECURITY_CONTEXT in self.pod.knative_features

    def slice_autoscaling(self, serving: str) -> Autoscaling:
        return self.autoscaling.on(serving, "spec.autoscaling", SLICE_TARGETS)

    def gateway_autoscaling(self, serving: str) -> Autoscaling:
        return self.runtime.gateway.autoscaling.on(serving, "spec.runtime.gateway.autoscaling", GATEWAY_TARGETS)

    def slice_concurrency(self, serving: str) -> int:
        """Knative's hard limit of requests per slice pod: as given, else the concurrency target."""
        if self.container_concurrency is not None:
            return self.container_concurrency
        scaling = self.slice_autoscaling(serving)
        if scaling.metric == "concurrency" and scaling.target is not None:
            return scaling.target
        return 1

    @property
    def cpu_bounds(self) -> tuple[float, float]:
        """vCPUs per slice the planner chooses from: `spec.cpu`, or the pinned threads alone."""
        if self.runtime.threads is not None:
            return float(self.runtime.threads), float(self.runtime.threads)
        return self.min_cpu, self.max_cpu

    @property
    def profile_threads(self) -> int:
        """The most threads the prepare Job profiles with (and the CPUs it requests)."""
        return math.ceil(self.cpu_bounds[1])

    def check_serving(self, serving: str) -> None:
        """SpecError unless `serving` can run this spec as it stands."""
        self.slice_autoscaling(serving)
        self.gateway_autoscaling(serving)
        if serving == KNATIVE:
            self.pod.check_knative()

    def prepare_hash(self) -> str:
        """Digest of everything the prepared plan depends on: a change re-prepares and rolls the
        slices; a change of anything else (autoscaling, transport tuning) only patches them."""
        inputs = {
            "storage_uri": self.storage_uri,
            "served_name": self.served_name,
            "input_shapes": {k: list(v) for k, v in sorted(self.input_shapes.items())},
            "objective": self.objective,
            "slo_ms": self.slo_ms,
            "max_slices": self.max_slices,
            "split": self.split,
            "max_split": self.max_split,
            "pricing": self.pricing,
            "cpu": [self.min_cpu, self.max_cpu],
            "memory": [self.min_memory_mib, self.max_memory_mib],
            "threads": self.runtime.threads,
        }
        if self.max_batch_size is not None:  # slices are sized for it (absent: the hashes as before)
            inputs["max_batch_size"] = self.max_batch_size
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = asdict(replace(self, pod=PodSettings()))
        data["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        data["pod"] = self.pod.to_json()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSpec:
        values = dict(data)
        values["input_shapes"] = {k: tuple(v) for k, v in values.get("input_shapes", {}).items()}
        values["autoscaling"] = Autoscaling(**values.get("autoscaling", {}))
        values["transport"] = Transport(**values.get("transport", {}))
        runtime = dict(values.get("runtime", {}))
        gateway = dict(runtime.get("gateway", {}))
        gateway["autoscaling"] = Autoscaling(**gateway.get("autoscaling", {}))
        runtime["gateway"] = Gateway(**gateway)
        values["runtime"] = Runtime(**runtime)
        values["pod"] = PodSettings.from_json(values.get("pod", {}))
        return cls(**values)


SPEC_FIELDS = {
    "model",
    "objective",
    "sloMs",
    "maxSlices",
    "split",
    "maxSplit",
    "pricing",
    "cpu",
    "memory",
    "autoscaling",
    "containerConcurrency",
    "timeoutSeconds",
    "transport",
    "runtime",
    "serving",
    "maxBatchSize",
    "dynamicBatching",
    "serviceAccountName",
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "affinity",
    "knativeFeatures",
}


def parse(spec: Mapping[str, Any] | None, name: str) -> ModelSpec:
    """The spec of PartitionedModel `name`, defaulted and checked; SpecError names the field."""
    if not isinstance(spec, Mapping):
        raise SpecError("spec: a PartitionedModel needs a spec with spec.model.storageUri")
    fields.known(spec, "spec", SPEC_FIELDS)
    model = fields.mapping(spec, "model", "spec.model", required=True)
    fields.known(model, "spec.model", {"storageUri", "name", "inputShapes"})
    uri = model.get("storageUri")
    if not isinstance(uri, str) or "://" not in uri:
        raise SpecError("spec.model.storageUri: give where the model is, e.g. pvc://models/resnet50.onnx")
    try:
        StorageUri.parse(uri)
    except ValueError as error:
        raise SpecError(f"spec.model.storageUri: {error}") from None
    if uri.startswith(("http://", "https://")) and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        raise SpecError("spec.model.storageUri: credentials do not belong in the URL")
    served = model.get("name", name)
    if not isinstance(served, str) or not _NAME.match(served):
        raise SpecError(f"spec.model.name: {served!r} is not a valid model name (lowercase, digits, . _ -)")
    shapes = {}
    for input_name, dims in fields.mapping(model, "inputShapes", "spec.model.inputShapes").items():
        valid = isinstance(dims, list) and 1 <= len(dims) <= 8
        if not valid or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= fields.INT32_MAX
                                for d in dims):  # fmt: skip
            raise SpecError(f"spec.model.inputShapes.{input_name}: 1 to 8 positive integers, e.g. [1, 128]")
        shapes[input_name] = tuple(dims)

    objective = fields.choice(spec, "objective", "spec.objective", ("cost", "latency", "slo"), "cost")
    slo = fields.number(spec, "sloMs", "spec.sloMs", MAX_SLO_MS)
    if objective == "slo" and slo is None:
        raise SpecError("spec.sloMs: objective slo needs a latency bound in milliseconds")
    memory = fields.mapping(spec, "memory", "spec.memory")
    fields.known(memory, "spec.memory", {"minMiB", "maxMiB"})
    min_mib, max_mib = (
        fields.integer(memory, key, f"spec.memory.{key}", None, 64, MAX_MEMORY_MIB) for key in ("minMiB", "maxMiB")
    )
    if min_mib is not None and max_mib is not None and min_mib > max_mib:
        raise SpecError(f"spec.memory: minMiB {min_mib} is above maxMiB {max_mib}")
    min_cpu, max_cpu = _cpu(fields.mapping(spec, "cpu", "spec.cpu"))
    pricing = spec.get("pricing", pricing_tables.DEFAULT)
    pricing = pricing_tables.ALIASES.get(pricing, pricing) if isinstance(pricing, str) else pricing
    serving = fields.choice(spec, "serving", "spec.serving", SERVING_MODES, "auto")
    max_batch = fields.integer(spec, "maxBatchSize", "spec.maxBatchSize", None, 1, MAX_BATCH_SIZE)
    delay = None
    if spec.get("dynamicBatching") is not None:
        batching = fields.mapping(spec, "dynamicBatching", "spec.dynamicBatching")
        fields.known(batching, "spec.dynamicBatching", {"maxQueueDelayMicroseconds"})
        where = "spec.dynamicBatching.maxQueueDelayMicroseconds"
        delay = fields.required_integer(batching, "maxQueueDelayMicroseconds", where, 0, 0, MAX_QUEUE_DELAY_US)
        if (max_batch or 1) < 2:
            raise SpecError("spec.dynamicBatching: merging requests needs spec.maxBatchSize of 2 or more")

    parsed = ModelSpec(
        storage_uri=uri,
        served_name=served,
        input_shapes=shapes,
        objective=str(objective),
        slo_ms=slo,
        max_slices=fields.required_integer(spec, "maxSlices", "spec.maxSlices", 8, 1, 64),
        split=fields.boolean(spec, "split", "spec.split", True),
        max_split=fields.required_integer(spec, "maxSplit", "spec.maxSplit", 8, 1, 16),
        pricing=str(fields.choice({"pricing": pricing}, "pricing", "spec.pricing", PRICING, pricing_tables.DEFAULT)),
        min_cpu=min_cpu,
        max_cpu=max_cpu,
        min_memory_mib=min_mib,
        max_memory_mib=max_mib,
        autoscaling=parse_autoscaling(fields.mapping(spec, "autoscaling", "spec.autoscaling"), "spec.autoscaling"),
        container_concurrency=fields.integer(
            spec, "containerConcurrency", "spec.containerConcurrency", None, 0, MAX_CONTAINER_CONCURRENCY
        ),
        timeout_seconds=fields.required_integer(
            spec, "timeoutSeconds", "spec.timeoutSeconds", 60, 1, MAX_TIMEOUT_SECONDS
        ),  # fmt: skip
        transport=_transport(fields.mapping(spec, "transport", "spec.transport")),
        runtime=_runtime(fields.mapping(spec, "runtime", "spec.runtime")),
        pod=parse_pod_settings(spec),
        serving=str(serving),
        max_batch_size=max_batch,
        max_queue_delay_us=delay,
    )
    if parsed.serving != "auto":  # known now; for auto, the reconcile checks once discovery has chosen
        parsed.check_serving(parsed.serving)
    return parsed


def _cpu(data: Mapping[str, Any]) -> tuple[float, float]:
    """spec.cpu's bounds: vCPUs above 0, at most CPU_CEILING, min not above max."""
    fields.known(data, "spec.cpu", {"min", "max"})
    low = fields.number(data, "min", "spec.cpu.min", CPU_CEILING)
    high = fields.number(data, "max", "spec.cpu.max", CPU_CEILING)
    low = MIN_CPU if low is None else low
    high = MAX_CPU if high is None else high
    if low > high:
        raise SpecError(f"spec.cpu: min {low:g} is above max {high:g}")
    return low, high


def _transport(data: Mapping[str, Any]) -> Transport:
    where = "spec.transport"
    fields.known(
        data, where, {"redisUrl", "redisSecretRef", "codec", "compressionThresholdBytes", "activationTtlSeconds"}
    )
    url = data.get("redisUrl")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://")):
            raise SpecError(f"{where}.redisUrl: a redis:// or rediss:// URL, got {url!r}")
        if "@" in url:
            raise SpecError(f"{where}.redisUrl: no credentials in the spec; put the URL in a Secret (redisSecretRef)")
    secret = fields.mapping(data, "redisSecretRef", f"{where}.redisSecretRef")
    fields.known(secret, f"{where}.redisSecretRef", {"name", "key"})
    if secret and fields.subdomain(secret, "name", f"{where}.redisSecretRef.name") is None:
        raise SpecError(f"{where}.redisSecretRef.name: the Secret's name is required")
    if url and secret:
        raise SpecError(f"{where}: give redisUrl or redisSecretRef, not both")
    codec = data.get("codec", "auto")
    if not isinstance(codec, str) or not _CODEC.match(codec):
        raise SpecError(f"{where}.codec: auto, none, zstdN or zstdN+shuffle, got {codec!r}")
    return Transport(
        redis_url=url,
        secret_name=secret.get("name"),
        secret_key=str(secret.get("key", "url")),
        codec=codec,
        compression_threshold_bytes=fields.required_integer(
            data, "compressionThresholdBytes", f"{where}.compressionThresholdBytes", 4096, 0
        ),
        activation_ttl_seconds=fields.required_integer(
            data, "activationTtlSeconds", f"{where}.activationTtlSeconds", 300, 1, 86400
        ),
    )


def _runtime(data: Mapping[str, Any]) -> Runtime:
    where = "spec.runtime"
    fields.known(data, where, {"image", "imagePullPolicy", "threads", "gateway", "prepare"})
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image or " " in image):
        raise SpecError(f"{where}.image: an image reference, got {image!r}")
    policy = fields.choice(data, "imagePullPolicy", f"{where}.imagePullPolicy", ("Always", "IfNotPresent", "Never"),
                           None)  # fmt: skip
    gateway, prepare = (fields.mapping(data, key, f"{where}.{key}") for key in ("gateway", "prepare"))
    fields.known(gateway, f"{where}.gateway", {"resources", "containerConcurrency", "autoscaling", "grpc"})
    fields.known(prepare, f"{where}.prepare", {"resources"})
    return Runtime(
        image=image,
        pull_policy=policy,
        threads=fields.integer(data, "threads", f"{where}.threads", None, 1, 64),
        gateway=Gateway(
            resources=fields.mapping(gateway, "resources", f"{where}.gateway.resources") or None,
            container_concurrency=fields.required_integer(
                gateway,
                "containerConcurrency",
                f"{where}.gateway.containerConcurrency",
                0,
                0,
                MAX_CONTAINER_CONCURRENCY,
            ),  # fmt: skip
            autoscaling=parse_autoscaling(
                fields.mapping(gateway, "autoscaling", f"{where}.gateway.autoscaling"), f"{where}.gateway.autoscaling"
            ),
            grpc=fields.boolean(gateway, "grpc", f"{where}.gateway.grpc", False),
        ),
        prepare_resources=fields.mapping(prepare, "resources", f"{where}.prepare.resources") or None,
    )
