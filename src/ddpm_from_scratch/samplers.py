"""The samplers a user can pick by name: our DDPM scheduler or a diffusers solver on the same config."""

from __future__ import annotations

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
