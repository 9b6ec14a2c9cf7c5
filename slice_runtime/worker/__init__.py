"""One slice served over HTTP: the run logic (core), its HTTP adapter and its entry point."""
