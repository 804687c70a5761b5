"""Benchmarks: `make bench` (or `python -m benchmarks`) prints a table of figures and targets."""
