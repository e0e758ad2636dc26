"""Benchmarks: each prints a human line and a JSON document."""
