"""The PartitionedModel spec, read and validated (pure).

The API server checks the CRD's structure; this module checks what a schema cannot
(an SLO objective without its SLO, bounds that contradict each other, credentials in
clear) and applies the CRD's defaults, so the operator and `mopar render` see the same
spec whether or not a server defaulted it. Every mistake is one message naming the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mopar.errors import SpecError
from mopar.model.uris import StorageUri

GROUP = "mopar.dev"
VERSION = "v1alpha1"
PLURAL = "partitionedmodels"
KIND = "PartitionedModel"
# How slices are served (`spec.serving`; `auto` picks Knative where API discovery lists it).
KNATIVE = "knative"
DEPLOYMENT = "deployment"
SERVING_MODES = (KNATIVE, DEPLOYMENT, "auto")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_DELAY = re.compile(r"^[0-9]+(s|m|h)$")
_CODEC = re.compile(r"^(auto|none|zstd-?[0-9]{1,2}(\+shuffle)?)$")


@dataclass(frozen=True)
class Autoscaling:
    min_scale: int = 1
    max_scale: int = 10
    target: int = 1
    metric: str = "concurrency"
    scale_to_zero: bool = False
    scale_down_delay: str | None = None


@dataclass(frozen=True)
class Transport:
    redis_url: str | None = None
    secret_name: str | None = None
    secret_key: str = "url"
    codec: str = "auto"
    compression_threshold_bytes: int = 4096
    activation_ttl_seconds: int = 300


@dataclass(frozen=True)
class Runtime:
    image: str | None = None
    pull_policy: str | None = None
    threads: int = 1
    gateway_resources: Mapping[str, Any] | None = None
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
    pricing: str = "lambda"
    min_memory_mib: int | None = None
    max_memory_mib: int | None = None
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    transport: Transport = field(default_factory=Transport)
    runtime: Runtime = field(default_factory=Runtime)
    serving: str = "auto"

    @property
    def scheme(self) -> str:
        return self.storage_uri.split("://", 1)[0]

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
            "memory": [self.min_memory_mib, self.max_memory_mib],
            "threads": self.runtime.threads,
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSpec:
        values = dict(data)
        values["input_shapes"] = {k: tuple(v) for k, v in values.get("input_shapes", {}).items()}
        values["autoscaling"] = Autoscaling(**values.get("autoscaling", {}))
        values["transport"] = Transport(**values.get("transport", {}))
        values["runtime"] = Runtime(**values.get("runtime", {}))
        return cls(**values)


def parse(spec: Mapping[str, Any] | None, name: str) -> ModelSpec:
    """The spec of PartitionedModel `name`, defaulted and checked; SpecError names the field."""
    if not isinstance(spec, Mapping):
        raise SpecError("spec: a PartitionedModel needs a spec with spec.model.storageUri")
    _known(
        spec,
        "spec",
        {
            "model",
            "objective",
            "sloMs",
            "maxSlices",
            "split",
            "maxSplit",
            "pricing",
            "memory",
            "autoscaling",
            "transport",
            "runtime",
            "serving",
        },
    )
    model = _mapping(spec, "model", "spec.model", required=True)
    _known(model, "spec.model", {"storageUri", "name", "inputShapes"})
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
    for input_name, dims in _mapping(model, "inputShapes", "spec.model.inputShapes").items():
        if not isinstance(dims, list) or not dims or not all(isinstance(d, int) and d >= 1 for d in dims):
            raise SpecError(f"spec.model.inputShapes.{input_name}: a list of positive integers, e.g. [1, 128]")
        shapes[input_name] = tuple(dims)

    objective = _choice(spec, "objective", "spec.objective", ("cost", "latency", "slo"), "cost")
    slo = spec.get("sloMs")
    if slo is not None and (isinstance(slo, bool) or not isinstance(slo, (int, float)) or slo <= 0):
        raise SpecError(f"spec.sloMs: a positive number of milliseconds, got {slo!r}")
    if objective == "slo" and slo is None:
        raise SpecError("spec.sloMs: objective slo needs a latency bound in milliseconds")
    memory = _mapping(spec, "memory", "spec.memory")
    _known(memory, "spec.memory", {"minMiB", "maxMiB"})
    min_mib, max_mib = (_integer(memory, key, f"spec.memory.{key}", None, 64) for key in ("minMiB", "maxMiB"))
    if min_mib is not None and max_mib is not None and min_mib > max_mib:
        raise SpecError(f"spec.memory: minMiB {min_mib} is above maxMiB {max_mib}")

    return ModelSpec(
        storage_uri=uri,
        served_name=served,
        input_shapes=shapes,
        objective=objective,
        slo_ms=float(slo) if slo is not None else None,
        max_slices=_integer(spec, "maxSlices", "spec.maxSlices", 8, 1, 64),  # type: ignore[arg-type]
        split=_boolean(spec, "split", "spec.split", True),
        max_split=_integer(spec, "maxSplit", "spec.maxSplit", 8, 1, 16),  # type: ignore[arg-type]
        pricing=_choice(spec, "pricing", "spec.pricing", ("lambda", "lambda-cpu-scaled", "knative"), "lambda"),
        min_memory_mib=min_mib,
        max_memory_mib=max_mib,
        autoscaling=_autoscaling(_mapping(spec, "autoscaling", "spec.autoscaling")),
        transport=_transport(_mapping(spec, "transport", "spec.transport")),
        runtime=_runtime(_mapping(spec, "runtime", "spec.runtime")),
        serving=_choice(spec, "serving", "spec.serving", SERVING_MODES, "auto"),
    )


def _autoscaling(data: Mapping[str, Any]) -> Autoscaling:
    where = "spec.autoscaling"
    _known(data, where, {"minScale", "maxScale", "target", "metric", "scaleToZero", "scaleDownDelay"})
    scale_to_zero = _boolean(data, "scaleToZero", f"{where}.scaleToZero", False)
    min_scale = _integer(data, "minScale", f"{where}.minScale", 0 if scale_to_zero else 1, 0)
    max_scale = _integer(data, "maxScale", f"{where}.maxScale", 10, 1)
    assert min_scale is not None and max_scale is not None
    if scale_to_zero and min_scale > 0:
        raise SpecError(f"{where}: scaleToZero needs minScale 0 (or unset), got {min_scale}")
    if min_scale > max_scale:
        raise SpecError(f"{where}: minScale {min_scale} is above maxScale {max_scale}")
    delay = data.get("scaleDownDelay")
    if delay is not None and (not isinstance(delay, str) or not _DELAY.match(delay)):
        raise SpecError(f"{where}.scaleDownDelay: a duration such as 30s, 5m or 1h, got {delay!r}")
    return Autoscaling(
        min_scale=min_scale,
        max_scale=max_scale,
        target=_integer(data, "target", f"{where}.target", 1, 1),  # type: ignore[arg-type]
        metric=_choice(data, "metric", f"{where}.metric", ("concurrency", "rps"), "concurrency"),
        scale_to_zero=scale_to_zero,
        scale_down_delay=delay,
    )


def _transport(data: Mapping[str, Any]) -> Transport:
    where = "spec.transport"
    _known(data, where, {"redisUrl", "redisSecretRef", "codec", "compressionThresholdBytes", "activationTtlSeconds"})
    url = data.get("redisUrl")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://")):
            raise SpecError(f"{where}.redisUrl: a redis:// or rediss:// URL, got {url!r}")
        if "@" in url:
            raise SpecError(f"{where}.redisUrl: no credentials in the spec; put the URL in a Secret (redisSecretRef)")
    secret = _mapping(data, "redisSecretRef", f"{where}.redisSecretRef")
    _known(secret, f"{where}.redisSecretRef", {"name", "key"})
    if secret and not isinstance(secret.get("name"), str):
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
        compression_threshold_bytes=_integer(
            data, "compressionThresholdBytes", f"{where}.compressionThresholdBytes", 4096, 0
        ),  # type: ignore[arg-type]
        activation_ttl_seconds=_integer(data, "activationTtlSeconds", f"{where}.activationTtlSeconds", 300, 1, 86400),  # type: ignore[arg-type]
    )


def _runtime(data: Mapping[str, Any]) -> Runtime:
    where = "spec.runtime"
    _known(data, where, {"image", "imagePullPolicy", "threads", "gateway", "prepare"})
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image or " " in image):
        raise SpecError(f"{where}.image: an image reference, got {image!r}")
    policy = data.get("imagePullPolicy")
    if policy is not None and policy not in ("Always", "IfNotPresent", "Never"):
        raise SpecError(f"{where}.imagePullPolicy: Always, IfNotPresent or Never, got {policy!r}")
    gateway, prepare = (_mapping(data, key, f"{where}.{key}") for key in ("gateway", "prepare"))
    return Runtime(
        image=image,
        pull_policy=policy,
        threads=_integer(data, "threads", f"{where}.threads", 1, 1, 64),  # type: ignore[arg-type]
        gateway_resources=_mapping(gateway, "resources", f"{where}.gateway.resources") or None,
        prepare_resources=_mapping(prepare, "resources", f"{where}.prepare.resources") or None,
    )


# -- small checked readers ---------------------------------------------------------
def _known(data: Mapping[str, Any], where: str, keys: set[str]) -> None:
    unknown = sorted(set(data) - keys)
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(keys))}")


def _mapping(data: Mapping[str, Any], key: str, where: str, required: bool = False) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise SpecError(f"{where}: required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: an object, got {type(value).__name__}")
    return value


def _choice(data: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise SpecError(f"{where}: one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _boolean(data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{where}: true or false, got {value!r}")
    return value


def _integer(
    data: Mapping[str, Any], key: str, where: str, default: int | None, minimum: int, maximum: int | None = None
) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise SpecError(f"{where}: {bound}, got {value}")
    return value
