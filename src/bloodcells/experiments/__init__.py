"""Exercise 3 at scale: variants, sweep plans, sweeps and their comparison."""
