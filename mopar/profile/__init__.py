"""Stage 1: per-node profile of a model (time, memory, FLOPs, compressibility, split costs)."""
