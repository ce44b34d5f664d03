"""Drift detection: what is monitored, reference samples per model version, the live window, tests and reports."""
