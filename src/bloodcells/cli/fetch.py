"""`bloodcells data download` and `data import-bbbc045`: bring data in from outside."""
