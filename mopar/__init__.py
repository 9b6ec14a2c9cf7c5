"""mopar's control plane, one sub-package per stage of the flow: model, profile, plan, slice,
operator; with the benchmark and the `mopar` command on top (see docs/architecture.md)."""

from slice_runtime.version import version

__version__ = version()
