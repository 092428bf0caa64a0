"""The samplers a user can pick by name: our DDPM scheduler or a diffusers solver on the same config."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from .scheduling_ddpm import DDPMFromScratchScheduler

SAMPLERS = {
    "ddpm": DDPMFromScratchScheduler,
    "ddim": DDIMScheduler,
    "dpm-solver": DPMSolverMultistepScheduler,
}
# Step counts at which each sampler gives its usual quality.
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm-solver": 25}


def scheduler_for(name: str, config):
    """A fresh scheduler of sampler `name` built from a DDPM scheduler's `config`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name].from_config(config)


def generate(pipeline, num_images: int, sampler: str, num_inference_steps: int, seed: int,
             batch_size: int) -> torch.Tensor:
    """`num_images` samples in [0, 1], image i drawn with generator seed `seed + i` whatever the batch size."""
    original = pipeline.scheduler
    pipeline.scheduler = scheduler_for(sampler, original.config)
    try:
        chunks = []
        for start in range(0, num_images, batch_size):
            count = min(batch_size, num_images - start)
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(count)]
            chunks.append(pipeline(batch_size=count, generator=generators, num_inference_steps=num_inference_steps,
                                   output_type="pt").images.cpu())
    finally:
        pipeline.scheduler = original
    return torch.cat(chunks)
