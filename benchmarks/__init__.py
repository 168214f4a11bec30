"""Benchmarks of svd-ms against its peers; run each from the repository root as `python -m benchmarks.<name>`
(docs/performance.md lists them with the numbers they measured). Shared helpers live in benchmarks.common."""
