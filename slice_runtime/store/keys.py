"""The key layout of the store, one place for every writer and reader (and for operators).

Activations: `mopar:{namespace}:{model}:{request_id}:{tensor}`, scoped so several models and
namespaces share one Redis and a model's `purge` clears only its own keys. Slice files:
`mopar:{namespace}:artifact:{sha256}` (see `artifacts`), which is why no model may be
called `artifact`.
"""

from __future__ import annotations

import re

ROOT = "mopar"
ARTIFACT_SCOPE = "artifact"
RESERVED_MODEL_NAMES = frozenset({ARTIFACT_SCOPE})
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_scope(namespace: str, model: str | None = None) -> None:
    """ValueError unless the namespace (and model) are non-empty and free of ':' (a ':' would let
    one model's key prefix match another model's keys)."""
    for what, value in (("namespace", namespace), ("model", model)):
        if value is None and what == "model":
            continue
        if not value or ":" in value:
            raise ValueError(f"{what} {value!r} must be non-empty and contain no ':'")
    if model in RESERVED_MODEL_NAMES:
        raise ValueError(f"model name {model!r} is reserved for the artifact store")


def check_request_id(request_id: str) -> str:
    """`request_id` if it is 1-128 characters of letters, digits, '-' and '_' (the gateway's hex uuids are)."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise ValueError(f"request id {request_id!r} must be 1-128 letters, digits, '-' or '_'")
    return request_id


def model_prefix(namespace: str, model: str) -> str:
    """The prefix of every activation key of one model."""
    return f"{ROOT}:{namespace}:{model}:"


def activation_key(namespace: str, model: str, request_id: str, tensor: str) -> str:
    """The Redis key of one tensor of one request: `mopar:{namespace}:{model}:{request_id}:{tensor}`."""
    return f"{model_prefix(namespace, model)}{request_id}:{tensor}"


def artifact_prefix(namespace: str) -> str:
    """The prefix of every artifact-store key of a namespace."""
    return f"{ROOT}:{namespace}:{ARTIFACT_SCOPE}:"
