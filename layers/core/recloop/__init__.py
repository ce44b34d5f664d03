"""RecLoop: a self-learning recommendation service (domain package shared by every function)."""

__version__ = "0.1.0"
