"""The data plane's exceptions, named for what went wrong; mapped to HTTP statuses in one place
(`http_status`, used by the gateway and the workers) and to exit status 2 by the CLI."""

from __future__ import annotations

from collections.abc import Sequence


class RuntimeFailure(Exception):
    """Base of every error the data plane raises on purpose."""

    exit_code = 2


class ManifestError(RuntimeFailure):
    """A slice directory or manifest that cannot be served as it is."""


class InvalidInput(RuntimeFailure):
    """The caller's request is wrong: tensor names, shapes, dtypes, encoding, size."""


class ModelNotFound(RuntimeFailure):
    """The request names a model this server does not serve."""


class TransportError(RuntimeFailure):
    """Moving tensors through the store failed (unreachable, timed out, keys missing)."""


class MissingTensors(TransportError):
    """Tensors a request needs are not in the store (never written, expired or deleted).

    An ordering or expiry problem rather than a store that is down; `tensors` names them,
    and the message says "missing" for callers that only look at the text.
    """

    def __init__(self, message: str, tensors: Sequence[str]) -> None:
        super().__init__(message)
        self.tensors = list(tensors)


class ArtifactError(TransportError):
    """An artifact that is missing, incomplete or corrupt in the store."""


class SliceFailed(RuntimeFailure):
    """A slice worker failed to run a request after its retries."""


class SettingError(RuntimeFailure):
    """A setting (option or environment variable) with a value that cannot be used."""


# The one place errors become HTTP statuses: the caller's mistakes are 4xx, ours 5xx. Looked up
# along the exception's classes, most specific first.
HTTP_STATUS: dict[type[RuntimeFailure], int] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    MissingTensors: 409,  # a slice asked to run before its inputs were written: the caller's ordering
    TransportError: 503,
    SliceFailed: 503,
}


def http_status(error: BaseException) -> int:
    """The HTTP status that answers `error` (500 for anything not named above: our bug)."""
    for kind in type(error).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 500
