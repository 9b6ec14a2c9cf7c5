"""The prepare Job of a PartitionedModel (pure): `mopar prepare` fetches, profiles, plans and
slices the model and stores the slice files and the manifest in the artifact store. It needs
no Kubernetes API access. It runs with the spec's pod settings (a service account for the
model's storage, pull secrets, placement), like every pod of the model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mopar.model.uris import StorageUri
from mopar.operator import names
from mopar.operator.credentials import transport_env
from mopar.operator.names import Object
from mopar.operator.pods import CACHE_DIR, container_security_context, image, pod_security_context
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import ModelSpec


def build_prepare_job(owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings) -> Object:
    pm = owner["name"]
    env = [
        *transport_env(owner, spec),
        {"name": "MOPAR_PM_NAME", "value": pm},
        {"name": "MOPAR_PM_NAMESPACE", "value": owner["namespace"]},
        {"name": "MOPAR_SPEC", "value": json.dumps(spec.to_json(), sort_keys=True, separators=(",", ":"))},
        {"name": "MOPAR_CACHE_DIR", "value": CACHE_DIR},
        # The profile measures each node at up to this many threads: the most a slice may get.
        {"name": "MOPAR_PROFILE_THREADS", "value": str(spec.profile_threads)},
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    uri = StorageUri.parse(spec.storage_uri)
    if uri.mount_path is not None:
        if uri.scheme == "pvc":
            volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": uri.source, "readOnly": True}})
        else:
            volumes.append({"name": "model", "configMap": {"name": uri.source}})
        mounts.append({"name": "model", "mountPath": uri.mount_path, "readOnly": True})
    cpus = str(spec.profile_threads)  # requested and limited alike: the profile times what it gets
    resources = dict(
        spec.runtime.prepare_resources
        or {"requests": {"cpu": cpus, "memory": "2Gi"}, "limits": {"cpu": cpus, "memory": "8Gi"}}
    )
    prepare_hash = spec.prepare_hash()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **names.metadata(names.prepare_job_name(pm, prepare_hash), owner, "prepare"),
            "annotations": {names.HASH_ANNOTATION: prepare_hash},
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": names.labels(pm, "prepare")},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    **spec.pod.fields(),
                    "containers": [
                        {
                            "name": "prepare",
                            **image(spec, settings),
                            "args": ["prepare"],
                            "env": env,
                            "resources": resources,
                            "securityContext": container_security_context(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }
