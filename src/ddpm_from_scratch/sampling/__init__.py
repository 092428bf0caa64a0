"""Sampling: samplers by name (`samplers`) and faster sampling (`fast`: compile, autocast)."""
