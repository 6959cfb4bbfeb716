"""Benchmarks: scripts that print JSON; results and how to reproduce them are in bench/README.md."""
