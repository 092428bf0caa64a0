"""Pictures: image grids (`grid`) and the forward and reverse chains (`chain`)."""
