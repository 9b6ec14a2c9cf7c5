"""The version of the distribution this runtime ships in (`mopar`), read from its metadata:
the one place it is written is pyproject.toml."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def version() -> str:
    try:
        return metadata.version("mopar")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
