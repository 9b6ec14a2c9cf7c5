"""mopar's control plane: profiling, planning, slicing, manifests, the operator and the CLI."""

__version__ = "0.1.0"
