"""Benchmarks: scripts that print figures (run with `python -m adapter.bench.<name>`), not timed tests."""
