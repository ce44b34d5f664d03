"""Benchmarks of RecLoop, run in-process against a real Redis server; each prints one JSON object."""
