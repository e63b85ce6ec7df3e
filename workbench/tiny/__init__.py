"""Tiny randomly initialised models built from configs (tests, benchmarks, the "tiny models" button)."""
