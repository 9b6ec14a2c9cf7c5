"""The data plane's exceptions, named for what went wrong; mapped to HTTP statuses and gRPC status
codes in one table (`http_status`, used by the gateway and the workers; `grpc_status`, by the
gateway's gRPC adapter) and to exit status 2 by the CLI."""

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


# The one place errors become statuses, as (HTTP status, gRPC status code name): the caller's
# mistakes are 4xx / INVALID_ARGUMENT, NOT_FOUND, ours 5xx / UNAVAILABLE. gRPC codes are named,
# not grpc.StatusCode members, so that nothing here imports grpc (a slice worker never does).
# Looked up along the exception's classes, most specific first.
STATUSES: dict[type[RuntimeFailure], tuple[int, str]] = {
    InvalidInput: (400, "INVALID_ARGUMENT"),
    ModelNotFound: (404, "NOT_FOUND"),
    # a slice asked to run before its inputs were written: the caller's ordering
    MissingTensors: (409, "FAILED_PRECONDITION"),
    TransportError: (503, "UNAVAILABLE"),
    SliceFailed: (503, "UNAVAILABLE"),
}
# What answers anything not named above: our bug.
UNNAMED = (500, "INTERNAL")


def _status(error: BaseException) -> tuple[int, str]:
    for kind in type(error).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return UNNAMED


def http_status(error: BaseException) -> int:
    """The HTTP status that answers `error` (500 for anything not named above)."""
    return _status(error)[0]


def grpc_status(error: BaseException) -> str:
    """The name of the gRPC status code that answers `error` (`grpc.StatusCode[name]`)."""
    return _status(error)[1]
