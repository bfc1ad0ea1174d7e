"""`bloodcells predict` and `bloodcells export`: a trained model put to work on new cells."""
