"""Latency benchmarks: baseline and FINE timed side by side."""
