"""Evaluation: the bound's reference rows, sample-quality distances (FD, KID) in a digit classifier's or an image
encoder's features, and the evaluation of a saved pipeline (`evaluate`)."""
