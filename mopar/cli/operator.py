"""`mopar operator`: the Kubernetes operator (in-cluster entry point)."""

from __future__ import annotations

import argparse
import asyncio


def run(args: argparse.Namespace) -> int:
    import logging

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
