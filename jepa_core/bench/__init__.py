"""Benchmarks: `python -m jepa_core.bench`."""
