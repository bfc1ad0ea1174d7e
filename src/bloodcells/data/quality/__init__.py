"""What can silently inflate accuracy: duplicates, leaks, degenerate images."""
