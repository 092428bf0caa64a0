"""Training data: the embedded 8×8 digits, image folders and datasets, and their transforms (`images`)."""
