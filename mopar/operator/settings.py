"""The operator's own settings, from its environment (what the Helm chart sets)."""

from __future__ import annotations

from dataclasses import dataclass

from slice_runtime.config import env_float, env_str
from slice_runtime.errors import SettingError
from slice_runtime.version import version

IMAGE_REPOSITORY = "ghcr.io/mopar-dev/mopar"


@dataclass(frozen=True)
class OperatorSettings:
    image: str = f"{IMAGE_REPOSITORY}:{version()}"
    pull_policy: str = "IfNotPresent"
    # The Redis that models use unless their spec names their own; its URL may carry a password,
    # so models get it through a Secret the operator writes into their namespace, never in clear.
    redis_url: str = "redis://mopar-redis:6379/0"
    # Each model gets its own ACL user on that Redis (its keys, the data plane's commands); off,
    # every model's pods share the operator's URL (for a Redis without ACLs, before 6.0).
    redis_acl: bool = True
    poll_seconds: float = 5.0  # how often to look again at a prepare Job or at the slices' readiness
    cluster_domain: str = "cluster.local"

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            image=env_str("MOPAR_IMAGE", cls.image) or cls.image,
            pull_policy=env_str("MOPAR_IMAGE_PULL_POLICY", cls.pull_policy) or cls.pull_policy,
            redis_url=env_str("MOPAR_REDIS_URL", cls.redis_url) or cls.redis_url,
            redis_acl=_env_bool("MOPAR_REDIS_ACL", cls.redis_acl),
            poll_seconds=env_float("MOPAR_POLL_SECONDS", cls.poll_seconds, 0.05),
            cluster_domain=env_str("MOPAR_CLUSTER_DOMAIN", cls.cluster_domain) or cls.cluster_domain,
        )


def _env_bool(name: str, default: bool) -> bool:
    raw = (env_str(name) or "").lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingError(f"{name}: true or false, got {raw!r}")
    return raw == "true"
