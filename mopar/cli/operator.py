"""`mopar operator`: the Kubernetes operator (in-cluster entry point)."""

from __future__ import annotations

import argparse
import asyncio

from mopar.errors import UsageError


def run(args: argparse.Namespace) -> int:
    import logging

    api_credentials()
    import kopf

    from mopar.operator import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    namespaces = args.namespace or None
    asyncio.run(
        kopf.operator(
            clusterwide=namespaces is None,
            namespaces=namespaces or [],
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
            standalone=True,  # one replica; no peering objects to coordinate several
        )
    )
    return 0


def api_credentials() -> None:
    """Find the API server and credentials before Kopf starts: without any, Kopf logs a traceback
    and retries its login every minute forever."""
    from kubernetes.config import ConfigException

    from mopar.operator.kube import KubeClient

    try:
        KubeClient.from_environment()  # builds no connection: nothing is contacted yet
    except (ConfigException, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            "no Kubernetes API to watch: MOPAR_KUBE_SERVER is not set, no service account is mounted "
            f"(not in a pod) and no kubeconfig is usable ($KUBECONFIG or ~/.kube/config: {reason})"
        ) from None
