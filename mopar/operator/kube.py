"""A small async client for the Kubernetes API: the operator's and the prepare Job's I/O.

Plain REST over aiohttp on explicit resource paths (what `kubectl` does), configured
in-cluster from the service account, else from the kubeconfig, or at a given server
(`MOPAR_KUBE_SERVER`; tests point it at the emulated API). `apply` is the idempotent
create-or-patch the handlers build on: it creates what is missing, merge-patches what
differs, and leaves equal objects alone, so a reconcile never rewrites needlessly.
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

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


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
    def __init__(self, server: str, token: str | None = None, ssl_context: ssl.SSLContext | bool | None = None) -> None:
        self.server = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
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
        """Create `obj`, or patch the existing object where it differs; 'created', 'patched' or 'unchanged'."""
        resource, meta = resource_of(obj), obj["metadata"]
        existing = await self.get(resource, meta["namespace"], meta["name"])
        if existing is None:
            await self.create(resource, meta["namespace"], obj)
            return "created"
        patch = {key: obj[key] for key in obj if key not in ("apiVersion", "kind", "status")}
        if _contains(existing, patch):
            return "unchanged"
        await self.patch(resource, meta["namespace"], meta["name"], patch)
        return "patched"


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
