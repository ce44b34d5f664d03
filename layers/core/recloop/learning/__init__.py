"""Learning: datasets, the replay harness, training and online learning."""
