"""Storage URIs of models (pure): which schemes there are and where a pod finds a mounted model.

pvc://CLAIM/path.onnx      the prepare Job mounts the claim at PVC_MOUNT_ROOT/CLAIM (read-only)
http(s)://host/path.onnx   downloaded
s3://bucket/key.onnx       anonymous GET from the bucket, or from $MOPAR_S3_ENDPOINT
configmap://NAME/KEY       the ConfigMap mounted at CONFIGMAP_MOUNT_ROOT/NAME
zoo://NAME[?scale=0.25]    a model of the built-in zoo, built on the spot

The operator builds the prepare Job's volumes from `StorageUri.source`; `storage.fetch`
reads the model where those volumes are mounted.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMES = ("pvc", "http", "https", "s3", "configmap", "zoo")
MOUNTED = ("pvc", "configmap")  # schemes the prepare Job reads from a volume
PVC_MOUNT_ROOT = "/mnt/pvc"
CONFIGMAP_MOUNT_ROOT = "/mnt/configmap"


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
            raise ValueError(f"{uri!r} is not one of {', '.join(s + '://' for s in SCHEMES)}")
        source, _, path = rest.partition("/")
        return cls(scheme, source, path, uri)

    @property
    def mount_path(self) -> str | None:
        """Where the prepare Job mounts the volume this URI names (None: not a mounted scheme)."""
        if self.scheme == "pvc":
            return f"{PVC_MOUNT_ROOT}/{self.source}"
        if self.scheme == "configmap":
            return f"{CONFIGMAP_MOUNT_ROOT}/{self.source}"
        return None
