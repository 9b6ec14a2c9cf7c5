"""The data plane's exceptions, named for what went wrong (mapped to HTTP statuses in one place,
`gateway.STATUS`, and to exit status 2 by the CLI)."""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base of every error the data plane raises on purpose."""

    exit_code = 2


class ManifestError(RuntimeFailure):
    """A slice directory or manifest that cannot be served as it is."""


class InvalidInput(RuntimeFailure):
    """The caller's request is wrong: tensor names, shapes, dtypes, encoding, size."""


class ModelNotFound(RuntimeFailure):
    """The request names a model this server does not serve."""


class ModelNotReady(RuntimeFailure):
    """The model is known but cannot serve now (workers starting or gone, store unreachable)."""


class TransportError(RuntimeFailure):
    """Moving tensors through the store failed (unreachable, timed out, keys missing)."""


class SliceFailed(RuntimeFailure):
    """A slice worker failed to run a request after its retries."""


class SettingError(RuntimeFailure):
    """A setting (option or environment variable) with a value that cannot be used."""
