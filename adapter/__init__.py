"""Triton pipeline adapter: keeps multi-model Triton pipelines inside their latency SLA."""

__version__ = "0.1.0"
