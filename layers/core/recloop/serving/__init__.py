"""Recommendations: candidate sources, scorers, the champion a Lambda instance serves, and the served-feature log."""
