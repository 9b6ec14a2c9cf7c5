"""The Open Inference Protocol in front of a partitioned model: core, HTTP adapter, entry point."""
