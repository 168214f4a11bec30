"""Command-line tools around the svd_ms engine (checkpoint conversion, ...)."""
