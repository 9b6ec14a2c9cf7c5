"""Fetching a model from a PartitionedModel's storageUri into a local file (the schemes: `uris`).

Downloads are streamed to disk; s3:// is an anonymous GET (public objects, or an
S3-compatible endpoint in $MOPAR_S3_ENDPOINT such as MinIO), with no request signing.
Mounted schemes are read under $MOPAR_PVC_ROOT and $MOPAR_CONFIGMAP_ROOT (default: where
the prepare Job mounts them), looked up when a model is fetched, and must stay under their
volume once symlinks are resolved.

The author of a spec chooses the URI, and the prepare Job fetches it from inside the
cluster: so http(s) goes only to public addresses (not loopback, private, link-local,
shared, multicast or reserved ones, the cloud's metadata service at 169.254.169.254
included) unless $MOPAR_FETCH_ALLOW_NETWORKS lists the network (CIDRs, comma-separated).
The check is made on the addresses a name resolves to, by the resolver the connection
uses (no second lookup to race), and again on every redirect. Errors name the URI and what
failed, never what the remote end answered: the fetch is no probe of the cluster's network.
The S3 endpoint is the administrator's setting, not the spec's, and is trusted.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mopar.errors import UsageError
from mopar.model.uris import CONFIGMAP_MOUNT_ROOT, PVC_MOUNT_ROOT, StorageUri

MAX_REDIRECTS = 5
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def pvc_root() -> Path:
    return Path(os.environ.get("MOPAR_PVC_ROOT") or PVC_MOUNT_ROOT)


def configmap_root() -> Path:
    return Path(os.environ.get("MOPAR_CONFIGMAP_ROOT") or CONFIGMAP_MOUNT_ROOT)


def allowed_networks() -> list[Network]:
    """$MOPAR_FETCH_ALLOW_NETWORKS: networks http(s) may reach although they are not public."""
    text = os.environ.get("MOPAR_FETCH_ALLOW_NETWORKS", "")
    try:
        return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise UsageError(f"MOPAR_FETCH_ALLOW_NETWORKS must be CIDRs such as 10.0.0.0/8: {error}") from None


async def fetch(uri: str, directory: Path) -> Path:
    """Put the model at `uri` into `directory`; return its path."""
    try:
        parsed = StorageUri.parse(uri)
    except ValueError as error:
        raise UsageError(str(error)) from None
    directory.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "zoo":
        return _zoo(uri.partition("://")[2], directory)
    if parsed.scheme == "pvc":
        return _mounted(uri, pvc_root(), parsed, f"no file {parsed.path!r} on claim {parsed.source!r}")
    if parsed.scheme == "configmap":
        return _mounted(uri, configmap_root(), parsed, f"no key {parsed.path!r} in ConfigMap {parsed.source!r}")
    if parsed.scheme in ("http", "https"):
        return await _download(uri, directory)
    endpoint = os.environ.get("MOPAR_S3_ENDPOINT")
    if endpoint:
        url = f"{endpoint.rstrip('/')}/{parsed.source}/{parsed.path}"
        return await _download(url, directory, shown=uri, trusted=urlsplit(endpoint).hostname)
    return await _download(f"https://{parsed.source}.s3.amazonaws.com/{parsed.path}", directory, shown=uri)


def _mounted(uri: str, root: Path, parsed: StorageUri, missing: str) -> Path:
    volume = (root / parsed.source).resolve()
    local = (volume / parsed.path).resolve()
    if not local.is_relative_to(volume):
        raise UsageError(f"{uri}: leads outside its volume (mounted at {root / parsed.source})")
    if not local.is_file():
        raise UsageError(f"{uri}: {missing} (mounted at {root / parsed.source})")
    return local


def _zoo(rest: str, directory: Path) -> Path:
    import onnx

    from mopar.model import zoo

    parts = urlsplit(f"zoo://{rest}")
    name = parts.netloc or parts.path.strip("/")
    options: dict[str, object] = {}
    for key, value in parse_qsl(parts.query):
        try:
            options[key] = int(value)
        except ValueError:
            try:
                options[key] = float(value)
            except ValueError:
                options[key] = value
    target = directory / f"{name}.onnx"
    onnx.save_model(zoo.build(name, **options), str(target))  # type: ignore[arg-type]
    return target


def _refusal(address: str, allowed: list[Network]) -> str | None:
    """Why `address` may not be fetched from (None: it may)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return None
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{'an' if kind[0] == 'u' else 'a'} {kind.replace('_', '-')} address"
    return None if ip.is_global else "not a public address"


class _GuardedResolver(AbstractResolver):
    """The system's resolver, refusing names that resolve to an address `_refusal` refuses."""

    def __init__(self, allowed: list[Network], shown: str, trusted: str | None) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allowed, self._shown, self._trusted = allowed, shown, trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        hosts = await self._inner.resolve(host, port, family)
        if host != self._trusted:
            for found in hosts:
                reason = _refusal(found["host"], self._allowed)
                if reason:  # every address must pass: a name may resolve differently on the next try
                    raise UsageError(
                        f"{self._shown}: refused, {host} resolves to {reason} (see MOPAR_FETCH_ALLOW_NETWORKS)"
                    )
        return hosts

    async def close(self) -> None:
        await self._inner.close()


def _check_literal(url: str, shown: str, allowed: list[Network], trusted: str | None) -> None:
    """aiohttp does not resolve an IP address in a URL: check it here."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{shown}: refused, redirected to something other than http(s)")
    try:
        ipaddress.ip_address(parts.hostname.split("%")[0])
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    reason = None if parts.hostname == trusted else _refusal(parts.hostname, allowed)
    if reason:
        raise UsageError(f"{shown}: refused, {parts.hostname} is {reason} (see MOPAR_FETCH_ALLOW_NETWORKS)")


async def _download(url: str, directory: Path, shown: str | None = None, trusted: str | None = None) -> Path:
    shown = shown or url
    allowed = allowed_networks()
    target = directory / (Path(urlsplit(url).path).name or "model.onnx")
    connector = aiohttp.TCPConnector(resolver=_GuardedResolver(allowed, shown, trusted))
    timeout = aiohttp.ClientTimeout(total=3600, sock_connect=30)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
            for _ in range(MAX_REDIRECTS + 1):
                _check_literal(url, shown, allowed, trusted)
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if response.status != 200:
                        raise UsageError(f"{shown}: HTTP {response.status}")
                    with target.open("wb") as out:
                        async for chunk in response.content.iter_chunked(1 << 20):
                            out.write(chunk)
                    return target
            raise UsageError(f"{shown}: more than {MAX_REDIRECTS} redirects")
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise UsageError(f"{shown}: cannot download ({_what_failed(error)})") from None


def _what_failed(error: BaseException) -> str:
    """What went wrong, in our words only (aiohttp's messages may quote the remote end)."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "the name does not resolve"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(error, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return "the connection broke off"
    if isinstance(error, aiohttp.ClientResponseError):
        return "not a valid HTTP response"
    return type(error).__name__
