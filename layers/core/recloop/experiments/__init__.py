"""Experiments between model versions: assignment, attributed outcomes, anytime-valid decisions, promotion."""
