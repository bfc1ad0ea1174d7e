"""Training several runs of one architecture as one stacked network."""
