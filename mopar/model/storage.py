"""Fetching a model from a PartitionedModel's storageUri into a local file (the schemes: `uris`).

Downloads are streamed to disk; s3:// is an anonymous GET (public objects, or an
S3-compatible endpoint in $MOPAR_S3_ENDPOINT such as MinIO), with no request signing.
Mounted schemes are read under $MOPAR_PVC_ROOT and $MOPAR_CONFIGMAP_ROOT (default: where
the prepare Job mounts them), looked up when a model is fetched.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from mopar.errors import UsageError
from mopar.model.uris import CONFIGMAP_MOUNT_ROOT, PVC_MOUNT_ROOT


def pvc_root() -> Path:
    return Path(os.environ.get("MOPAR_PVC_ROOT") or PVC_MOUNT_ROOT)


def configmap_root() -> Path:
    return Path(os.environ.get("MOPAR_CONFIGMAP_ROOT") or CONFIGMAP_MOUNT_ROOT)


async def fetch(uri: str, directory: Path) -> Path:
    """Put the model at `uri` into `directory`; return its path."""
    scheme, _, rest = uri.partition("://")
    directory.mkdir(parents=True, exist_ok=True)
    if scheme == "zoo":
        return _zoo(rest, directory)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        local = pvc_root() / claim / path
        if not local.is_file():
            raise UsageError(f"{uri}: no file {path!r} on claim {claim!r} (mounted at {pvc_root() / claim})")
        return local
    if scheme in ("http", "https"):
        return await _download(uri, directory)
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        endpoint = os.environ.get("MOPAR_S3_ENDPOINT")
        url = f"{endpoint.rstrip('/')}/{bucket}/{key}" if endpoint else f"https://{bucket}.s3.amazonaws.com/{key}"
        return await _download(url, directory, shown=uri)
    if scheme == "configmap":
        name, _, key = rest.partition("/")
        local = configmap_root() / name / key
        if not local.is_file():
            raise UsageError(f"{uri}: no key {key!r} in ConfigMap {name!r} (mounted at {configmap_root() / name})")
        return local
    raise UsageError(f"{uri}: unsupported storage scheme {scheme!r}")


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


async def _download(url: str, directory: Path, shown: str | None = None) -> Path:
    name = Path(urlsplit(url).path).name or "model.onnx"
    target = directory / name
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600, sock_connect=30)) as session:
            async with session.get(url) as response:
                if response.status != 200:
                    raise UsageError(f"{shown or url}: HTTP {response.status} {response.reason}")
                with target.open("wb") as out:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        out.write(chunk)
    except aiohttp.ClientError as error:
        raise UsageError(f"{shown or url}: cannot download ({error})") from None
    return target
