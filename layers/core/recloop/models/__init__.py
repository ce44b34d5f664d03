"""Recommendation models: bundles in the registry, and the kinds that score candidates."""
