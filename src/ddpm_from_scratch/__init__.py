"""Denoising diffusion probabilistic models from first principles, as a diffusers plugin."""
