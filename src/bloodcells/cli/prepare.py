"""`bloodcells data split` and `data check`: folders into the lab layout, and leaks found."""
