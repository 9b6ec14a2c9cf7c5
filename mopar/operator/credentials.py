"""Where a model's pods find their Redis (pure): the spec's own URL, the Secret the spec names,
or the operator's Redis under the model's own ACL user (`tenancy`), whose URL the operator
keeps in a Secret in the model's namespace."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from mopar.operator import names, tenancy
from mopar.operator.names import Object
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import ModelSpec


def uses_operator_redis(spec: ModelSpec) -> bool:
    return not (spec.transport.redis_url or spec.transport.secret_name)


def transport_env(owner: Mapping[str, Any], spec: ModelSpec) -> list[dict[str, Any]]:
    """MOPAR_TRANSPORT and MOPAR_ARTIFACTS: the spec's URL when it has no credentials, else a
    Secret: the one the spec names, or the one the operator keeps for the model
    (`build_redis_secret`)."""
    if spec.transport.redis_url:
        url = spec.transport.redis_url
        return [{"name": "MOPAR_TRANSPORT", "value": url}, {"name": "MOPAR_ARTIFACTS", "value": url}]
    reference = secret_reference(owner, spec)
    source = {"valueFrom": {"secretKeyRef": reference}}
    return [{"name": "MOPAR_TRANSPORT", **source}, {"name": "MOPAR_ARTIFACTS", **source}]


def secret_reference(owner: Mapping[str, Any], spec: ModelSpec) -> dict[str, str]:
    if spec.transport.secret_name:
        return {"name": spec.transport.secret_name, "key": spec.transport.secret_key}
    return {"name": names.redis_secret_name(owner["name"]), "key": "url"}


def build_credentials(owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings) -> list[Object]:
    """The Secret this model's pods read their Redis URL from; none when the spec names a Redis
    of its own."""
    if not uses_operator_redis(spec):
        return []
    url = tenancy.model_url(settings.redis_url, owner) if settings.redis_acl else settings.redis_url
    return [build_redis_secret(owner, url)]


def build_redis_secret(owner: Mapping[str, Any], url: str) -> Object:
    """A Redis URL for this model's pods (when its spec names no Redis of its own)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": names.metadata(names.redis_secret_name(owner["name"]), owner, "credentials"),
        "type": "Opaque",
        # `data`, not `stringData`: servers store data, so a reapplied Secret compares equal.
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }
