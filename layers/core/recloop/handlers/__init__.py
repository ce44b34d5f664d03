"""Lambda entry points: HTTP routes, the stream consumer, training; the one mapping of domain errors to HTTP."""
