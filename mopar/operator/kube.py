"""A small async client for the Kubernetes API: the operator's and the prepare Job's I/O.

Plain REST over aiohttp on explicit resource paths (what `kubectl` does), configured
in-cluster from the service account, else from the kubeconfig, or at a given server
(`MOPAR_KUBE_SERVER`; tests point it at the emulated API). `apply` is the idempotent
create-or-patch the handlers build on: it creates what is missing, merge-patches what
differs, removes what it set before and sets no more, and leaves equal objects alone, so a
reconcile converges and never rewrites needlessly. Which fields it set is recorded on each
object (`APPLIED`, like kubectl's last-applied annotation, but only the field names, so a
large ConfigMap is not doubled): the emulated API has no server-side apply.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from mopar.errors import KubeError, KubeNotFound
from slice_runtime.version import version

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
APPLIED = "mopar.dev/applied-fields"
USER_AGENT = f"mopar-operator/{version()}"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICES = Resource("", "v1", "services", "Service")
JOBS = Resource("batch", "v1", "jobs", "Job")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
KSERVICES = Resource("serving.knative.dev", "v1", "services", "Service")
PARTITIONED_MODELS = Resource("mopar.dev", "v1alpha1", "partitionedmodels", "PartitionedModel")
_BY_KIND = {(r.api_version, r.kind): r for r in (CONFIGMAPS, SECRETS, SERVICES, JOBS, DEPLOYMENTS, HPAS, KSERVICES)}


def resource_of(obj: Mapping[str, Any]) -> Resource:
    return _BY_KIND[(obj["apiVersion"], obj["kind"])]


class KubeClient:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        ssl_context: ssl.SSLContext | bool | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.server = server.rstrip("/")
        self.headers = {"User-Agent": user_agent, **({"Authorization": f"Bearer {token}"} if token else {})}
        # None is aiohttp's default, verify with the system's CAs: spelled True, as its annotations want.
        self.ssl: ssl.SSLContext | bool = True if ssl_context is None else ssl_context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls) -> KubeClient:
        """At $MOPAR_KUBE_SERVER, else in-cluster (service account), else the kubeconfig."""
        server = os.environ.get("MOPAR_KUBE_SERVER")
        if server:
            return cls(server)
        token_file = SERVICE_ACCOUNT / "token"
        if token_file.exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
            host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
            return cls(f"https://{host}:{port}", token_file.read_text().strip(), context)
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
        tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert) if configuration.ssl_ca_cert else None
        if tls and configuration.cert_file:
            tls.load_cert_chain(configuration.cert_file, configuration.key_file)
        token = (configuration.api_key.get("authorization") or "").removeprefix("Bearer ").strip() or None
        return cls(configuration.host, token, tls if configuration.verify_ssl else False)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            async with self.session.request(
                method, self.server + path, data=data, headers=headers, params=params, ssl=self.ssl
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    try:
                        message = json.loads(text).get("message", text)
                    except ValueError:
                        message = text
                    kind = KubeNotFound if response.status == 404 else KubeError
                    raise kind(response.status, f"{method} {path}: {response.status} {message}"[:500])
                return json.loads(text) if text else None
        except aiohttp.ClientError as error:
            raise KubeError(0, f"{method} {path}: cannot reach the Kubernetes API at {self.server}: {error}") from None

    # -- verbs ----------------------------------------------------------------------
    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            return await self._request("GET", resource.path(namespace, name))
        except KubeNotFound:
            return None

    async def list(
        self, resource: Resource, namespace: str, selector: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `resource` in `namespace` with the labels of `selector`; KubeNotFound when
        the server does not serve that kind (no Knative, say)."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())} if selector else None
        listing = await self._request("GET", resource.path(namespace), params=params)
        items = listing.get("items", []) if listing else []
        if selector:  # servers filter by the selector; check anyway rather than act on a stranger's object
            items = [
                i
                for i in items
                if all(i.get("metadata", {}).get("labels", {}).get(k) == v for k, v in selector.items())
            ]
        return items

    async def create(self, resource: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", resource.path(namespace), body)

    async def patch(
        self, resource: Resource, namespace: str, name: str, patch: Mapping[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH", resource.path(namespace, name, subresource), patch, "application/merge-patch+json"
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete the object; False if there was none."""
        try:
            await self._request("DELETE", resource.path(namespace, name), {"propagationPolicy": "Background"})
            return True
        except KubeNotFound:
            return False

    async def serves(self, group: str, version: str) -> bool:
        """Whether API discovery lists `group/version` (e.g. serving.knative.dev/v1)."""
        groups = await self._request("GET", "/apis")
        return any(
            g.get("name") == group and any(v.get("version") == version for v in g.get("versions", []))
            for g in (groups or {}).get("groups", [])
        )

    async def apply(self, obj: Mapping[str, Any]) -> str:
        """Create `obj`, or patch the existing object where it differs from `obj` and remove the
        fields an earlier apply set that `obj` no longer has; 'created', 'patched' or 'unchanged'."""
        resource, meta = resource_of(obj), obj["metadata"]
        desired = with_record(obj)
        existing = await self.get(resource, meta["namespace"], meta["name"])
        if existing is None:
            await self.create(resource, meta["namespace"], desired)
            return "created"
        patch = merge_patch(existing, desired, recorded(existing))
        if not patch:
            return "unchanged"
        await self.patch(resource, meta["namespace"], meta["name"], patch)
        return "patched"


def fieldset(value: Any) -> Any:
    """The shape of `value`: its keys and list items, each leaf 0."""
    if isinstance(value, Mapping):
        return {k: fieldset(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fieldset(v) for v in value]
    return 0


def with_record(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What apply sends: `obj`'s own fields (not apiVersion, kind, status) and the record of them."""
    body = {k: v for k, v in obj.items() if k != "status"}
    shape = fieldset({k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
    meta = dict(body["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), APPLIED: json.dumps(shape, separators=(",", ":"))}
    return {**body, "metadata": meta}


def recorded(existing: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the last apply set on `existing` ({} when it has no readable record)."""
    raw = existing.get("metadata", {}).get("annotations", {}).get(APPLIED)
    try:
        shape = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return shape if isinstance(shape, dict) else {}


def merge_patch(live: Mapping[str, Any], desired: Mapping[str, Any], previous: Any) -> dict[str, Any]:
    """An RFC 7386 merge patch taking `live` to `desired` where they differ, with null for the
    fields `previous` (a `fieldset`) names that `desired` lacks; {} when nothing is to change.
    Lists are replaced whole, as a merge patch does, when they differ or lost a field."""
    patch: dict[str, Any] = {}
    before = previous if isinstance(previous, Mapping) else {}
    for key, value in desired.items():
        if key in ("apiVersion", "kind"):
            continue
        current = live.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            inner = merge_patch(current, value, before.get(key))
            if inner:
                patch[key] = inner
        elif not _contains(current, value) or _lost_fields(before.get(key), value):
            patch[key] = value
    for key in before:
        if key not in desired and key in live:
            patch[key] = None
    return patch


def _lost_fields(previous: Any, desired: Any) -> bool:
    """Whether a list item set before had a field that `desired` no longer has."""
    if isinstance(previous, Mapping) and isinstance(desired, Mapping):
        return any(k not in desired or _lost_fields(v, desired[k]) for k, v in previous.items())
    if isinstance(previous, list) and isinstance(desired, list):
        return len(previous) != len(desired) or any(_lost_fields(p, d) for p, d in zip(previous, desired))
    return False


def _contains(existing: Any, desired: Any) -> bool:
    """Whether `existing` already holds everything `desired` says (servers add defaults around it)."""
    if isinstance(desired, Mapping):
        return isinstance(existing, Mapping) and all(_contains(existing.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(desired)
            and all(_contains(e, d) for e, d in zip(existing, desired))
        )
    return existing == desired
