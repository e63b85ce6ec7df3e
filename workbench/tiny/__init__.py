"""Tiny random models built from configs (nothing downloaded), for tests and benchmarks."""
