"""One Redis user per PartitionedModel (pure): its name, its password, its rules and the URL its
pods connect with.

Every key a model's pods write starts with `mopar:{scope}:` (`names.store_scope`: its
activations, slice files and published manifest), so one ACL key pattern confines a model to
its own keys, and the command list confines it to what the data plane sends (Redis ACL:
https://redis.io/docs/latest/operate/oss_and_stack/management/security/acl/). The password is
an HMAC of the scope under the operator's own Redis URL: the operator can always derive it
again and never stores or reads it back; nobody without the operator's URL can.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from mopar.operator import names

# What the data plane sends after the handshake (AUTH, HELLO and CLIENT SETINFO, which redis-py
# tolerates being refused): SET/MGET/DEL of activations and PING (store/redis.py); GET, SET,
# HSET, HGETALL and EXISTS of slice files and manifest names (store/artifacts.py); SELECT when
# the URL names a database other than 0. tests/operator/test_tenancy.py derives this list from
# a real server's command statistics.
COMMANDS = ("del", "exists", "get", "hgetall", "hset", "mget", "ping", "select", "set")


def user(owner: Mapping[str, Any]) -> str:
    return f"mopar-{names.store_scope(owner)}"


def key_pattern(owner: Mapping[str, Any]) -> str:
    return f"mopar:{names.store_scope(owner)}:*"


def password(admin_url: str, owner: Mapping[str, Any]) -> str:
    return hmac.new(admin_url.encode(), f"mopar-acl:{names.store_scope(owner)}".encode(), hashlib.sha256).hexdigest()


def rules(owner: Mapping[str, Any], admin_url: str) -> list[str]:
    """ACL SETUSER arguments: from a clean slate (`reset`), on, this password, these keys, no
    channels, these commands only."""
    return [
        "reset",
        "on",
        f">{password(admin_url, owner)}",
        f"~{key_pattern(owner)}",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command in COMMANDS),
    ]


def model_url(admin_url: str, owner: Mapping[str, Any]) -> str:
    """The operator's Redis URL with this model's user and password instead of its own."""
    parts = urlsplit(admin_url)
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    credentials = f"{quote(user(owner), safe='')}:{quote(password(admin_url, owner), safe='')}@"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("username", "password")])
    return urlunsplit((parts.scheme, credentials + host + port, parts.path, query, ""))
