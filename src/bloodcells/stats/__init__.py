"""Statistics with no model in sight: intervals, adjusted counts, seed comparisons."""
