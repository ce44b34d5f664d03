"""What every capability shares: settings, interaction events and their weights, domain errors.

Imports nothing of recloop."""
