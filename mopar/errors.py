"""The control plane's exceptions: one short hierarchy, mapped to exit codes by the CLI.

`UsageError` is the caller's mistake (a missing file, a file that is not ONNX, an
unknown zoo name, an unsatisfiable plan, a bad PartitionedModel spec): the CLI prints its
message on one line and exits 2. `VerificationError` is a partitioned model that does not
match the whole one: exit 1. `KubeError` is the Kubernetes API's answer. Anything else is
our bug and keeps its traceback.
"""

from __future__ import annotations


class MoparError(Exception):
    """Base of every error the control plane raises on purpose."""

    exit_code = 2


class UsageError(MoparError):
    """Bad input from the caller: files, names, options, specs."""


class ModelError(UsageError):
    """A model file that cannot be read, checked or run as given."""


class PlanError(UsageError):
    """No plan satisfies the objective and constraints (names the bound that fails)."""


class SpecError(UsageError):
    """A PartitionedModel spec that cannot be served (names the field)."""


class KubeError(MoparError):
    """The Kubernetes API refused a request or could not be reached (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeNotFound(KubeError):
    """The object, or the kind of object, is not there (404)."""


class VerificationError(MoparError):
    """The partitioned model's outputs differ from the whole model's beyond tolerance."""

    exit_code = 1
