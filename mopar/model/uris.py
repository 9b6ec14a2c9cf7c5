"""Storage URIs of models (pure): which schemes there are and where a pod finds a mounted model.

pvc://CLAIM/path.onnx      the prepare Job mounts the claim at PVC_MOUNT_ROOT/CLAIM (read-only)
http(s)://host/path.onnx   downloaded
s3://bucket/key.onnx       anonymous GET from the bucket, or from $MOPAR_S3_ENDPOINT
configmap://NAME/KEY       the ConfigMap mounted at CONFIGMAP_MOUNT_ROOT/NAME
zoo://NAME[?scale=0.25]    a model of the built-in zoo, built on the spot

The operator builds the prepare Job's volumes from `StorageUri.source`; `storage.fetch`
reads the model where those volumes are mounted. A mounted path is plain: no `..`, `.` or
empty segments and not absolute, so it names a file under its volume (symlinks are
checked where the volume is, by `storage`); a source is a Kubernetes name or, for s3, a
bucket name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMES = ("pvc", "http", "https", "s3", "configmap", "zoo")
MOUNTED = ("pvc", "configmap")  # schemes the prepare Job reads from a volume
PVC_MOUNT_ROOT = "/mnt/pvc"
CONFIGMAP_MOUNT_ROOT = "/mnt/configmap"
_KUBE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # RFC 1123 subdomain
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3 bucket naming rules


@dataclass(frozen=True)
class StorageUri:
    scheme: str
    source: str  # the claim, ConfigMap, bucket, host or zoo name
    path: str  # what follows the source ('' when nothing does)
    uri: str

    @classmethod
    def parse(cls, uri: str) -> StorageUri:
        """Split `uri`; ValueError (one line) when its scheme is not one of SCHEMES or nothing follows it."""
        scheme, sep, rest = uri.partition("://")
        if not sep or scheme not in SCHEMES or not rest:
            raise ValueError(f"{uri[:200]!r} is not one of {', '.join(s + '://' for s in SCHEMES)}")
        source, _, path = rest.partition("/")
        if scheme in MOUNTED:
            if not _KUBE_NAME.fullmatch(source):
                raise ValueError(f"{uri[:200]!r}: {source[:100]!r} is not a Kubernetes object name")
            segments = path.split("/")
            if not path or any(s in ("", ".", "..") for s in segments) or "\\" in path or "\x00" in path:
                raise ValueError(f"{uri[:200]!r}: the path must name a file under the volume, without '..' or '//'")
        if scheme == "s3" and (not _BUCKET.fullmatch(source) or not path):
            raise ValueError(f"{uri[:200]!r}: expected s3://BUCKET/KEY with an S3 bucket name")
        return cls(scheme, source, path, uri)

    @property
    def mount_path(self) -> str | None:
        """Where the prepare Job mounts the volume this URI names (None: not a mounted scheme)."""
        if self.scheme == "pvc":
            return f"{PVC_MOUNT_ROOT}/{self.source}"
        if self.scheme == "configmap":
            return f"{CONFIGMAP_MOUNT_ROOT}/{self.source}"
        return None
