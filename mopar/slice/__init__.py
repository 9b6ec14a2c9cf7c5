"""Stage 3: cutting a model into slice files by its plan, and verifying them against the whole model."""
