"""What the operator does in Redis itself, with its own credentials: keep each model's ACL user
(`tenancy`) and remove everything of a deleted model (every key under its scope)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from mopar.operator import names, tenancy
from slice_runtime.errors import TransportError
from slice_runtime.store.redis import describe_redis_error, glob_escape, redis_server_name, url_password

_BATCH = 1000


def _client(url: str) -> aredis.Redis:
    return aredis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=10.0)


def _error(error: BaseException, url: str, action: str) -> TransportError:
    return TransportError(describe_redis_error(error, redis_server_name(url), action, url_password(url)))


async def ensure_user(admin_url: str, owner: Mapping[str, Any]) -> None:
    """Create or reset the model's ACL user (idempotent: `reset` starts from a clean slate)."""
    user = tenancy.user(owner)
    await _acl(admin_url, f"creating Redis user {user}", "SETUSER", user, *tenancy.rules(owner, admin_url))


async def restore_user(admin_url: str, owner: Mapping[str, Any]) -> bool:
    """Make the model's ACL user again if Redis no longer has it; True if it had to. A restarted
    Redis forgets the users made at run time (unless an ACL file saves them), while its keys may
    survive on disk: the pods would be locked out of their own slices until the next reconcile."""
    user = tenancy.user(owner)
    if await _acl(admin_url, f"looking up Redis user {user}", "GETUSER", user) is not None:
        return False
    await ensure_user(admin_url, owner)
    return True


async def remove_user(admin_url: str, owner: Mapping[str, Any]) -> bool:
    """Delete the model's ACL user (and so its connections); False if it had none."""
    user = tenancy.user(owner)
    return bool(await _acl(admin_url, f"deleting Redis user {user}", "DELUSER", user))


async def _acl(admin_url: str, action: str, *arguments: str) -> Any:
    """One ACL command on a connection of its own; TransportError naming `action` if it fails."""
    client = _client(admin_url)
    try:
        return await client.execute_command("ACL", *arguments)
    except (RedisError, OSError) as error:
        raise _error(error, admin_url, action) from error
    finally:
        await client.aclose()


async def purge(url: str, owner: Mapping[str, Any]) -> int:
    """Delete every key of the model's scope: activations, slice files, manifest names."""
    client = _client(url)
    pattern = glob_escape(f"mopar:{names.store_scope(owner)}:") + "*"
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=_BATCH):
            batch.append(key)
            if len(batch) >= _BATCH:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
    except (RedisError, OSError) as error:
        raise _error(error, url, f"removing the keys of {names.store_scope(owner)}") from error
    finally:
        await client.aclose()
    return deleted
