"""The operator's own settings, from its environment (what the Helm chart sets)."""

from __future__ import annotations

from dataclasses import dataclass

from slice_runtime.config import env_float, env_str

from .errors import UsageError


@dataclass(frozen=True)
class OperatorSettings:
    image: str = "ghcr.io/mopar-dev/mopar:0.1.0"
    pull_policy: str = "IfNotPresent"
    # Where slices exchange tensors and keep their files unless a PartitionedModel says otherwise:
    # a URL without credentials, or a Secret (in the model's namespace) holding the full URL.
    redis_url: str | None = "redis://mopar-redis:6379/0"
    redis_secret: str | None = None
    redis_secret_key: str = "url"
    poll_seconds: float = 5.0  # how often to look again at a prepare Job or at the slices' readiness
    cluster_domain: str = "cluster.local"

    @classmethod
    def from_env(cls) -> OperatorSettings:
        secret = env_str("MOPAR_REDIS_SECRET")  # NAME or NAME:KEY
        name, _, key = (secret or "").partition(":")
        url = env_str("MOPAR_REDIS_URL", cls.redis_url)
        if url and "@" in url:
            raise UsageError("MOPAR_REDIS_URL must not carry credentials; use MOPAR_REDIS_SECRET=NAME[:KEY]")
        return cls(
            image=env_str("MOPAR_IMAGE", cls.image) or cls.image,
            pull_policy=env_str("MOPAR_IMAGE_PULL_POLICY", cls.pull_policy) or cls.pull_policy,
            redis_url=None if secret else url,
            redis_secret=name or None,
            redis_secret_key=key or "url",
            poll_seconds=env_float("MOPAR_POLL_SECONDS", cls.poll_seconds, 0.05),
            cluster_domain=env_str("MOPAR_CLUSTER_DOMAIN", cls.cluster_domain) or cls.cluster_domain,
        )
