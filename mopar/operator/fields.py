"""Checked readers of a PartitionedModel's spec fields (pure): each returns the value or raises
one SpecError naming the field, with the bounds the API server and Knative would enforce."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mopar.errors import SpecError

# Kubernetes' replica counts (Deployment, HPA) and Knative's scale annotations are int32.
INT32_MAX = 2**31 - 1
# A DNS-1123 subdomain: names of Secrets and service accounts.
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def known(data: Mapping[str, Any], where: str, keys: set[str]) -> None:
    unknown = sorted(set(data) - keys)
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(keys))}")


def mapping(data: Mapping[str, Any], key: str, where: str, required: bool = False) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise SpecError(f"{where}: required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: an object, got {type(value).__name__}")
    return value


def items(data: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(f"{where}: a list, got {type(value).__name__}")
    return value


def choice(data: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: str | None) -> str | None:
    value = data.get(key, default)
    if value is None:
        return None
    if value not in choices:
        raise SpecError(f"{where}: one of {', '.join(choices)}, got {value!r}")
    return str(value)


def boolean(data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{where}: true or false, got {value!r}")
    return value


def integer(
    data: Mapping[str, Any], key: str, where: str, default: int | None, minimum: int, maximum: int = INT32_MAX
) -> int | None:
    """An integer within [minimum, maximum] (int32 unless said otherwise), or `default` when absent."""
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where}: an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise SpecError(f"{where}: from {minimum} to {maximum}, got {value}")
    return value


def required_integer(
    data: Mapping[str, Any], key: str, where: str, default: int, minimum: int, maximum: int = INT32_MAX
) -> int:
    value = integer(data, key, where, default, minimum, maximum)
    assert value is not None  # a default was given
    return value


def number(data: Mapping[str, Any], key: str, where: str, maximum: float) -> float | None:
    """A finite number above 0 and at most `maximum` (JSON has no NaN; YAML's .nan and .inf are refused)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: a finite number, got {value!r}")
    if not 0 < value <= maximum:
        raise SpecError(f"{where}: above 0 and at most {maximum:g}, got {value!r}")
    return float(value)


def string_map(data: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = mapping(data, key, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(f"{where}: a map of strings to strings")
    return dict(value)


def subdomain(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 253 or not SUBDOMAIN.match(value):
        raise SpecError(f"{where}: a DNS-1123 name (lowercase letters, digits, '-' and '.'), got {value!r}")
    return value
