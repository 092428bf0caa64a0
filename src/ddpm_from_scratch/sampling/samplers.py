"""The samplers a user can pick by name: our DDPM scheduler, or any diffusers solver built from the same config.

A sampler name is one of the project's short names (``ddpm``, ``ddim``, ``dpm-solver``) or the class
name of a diffusers scheduler that diffusers declares compatible with a DDPM config
(``EulerDiscreteScheduler``, ``UniPCMultistepScheduler``, …; matched without regard to case). Every one is
built with ``from_config`` on the trained model's scheduler config, so it sees the same β schedule.
"""

from __future__ import annotations

import argparse

import diffusers
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from ..schedulers.scheduling_ddpm import DDPMFromScratchScheduler

SAMPLERS = {
    "ddpm": DDPMFromScratchScheduler,
    "ddim": DDIMScheduler,
    "dpm-solver": DPMSolverMultistepScheduler,
}
# diffusers' schedulers for a DDPM config (its KarrasDiffusionSchedulers list), less EDMEulerScheduler:
# it builds from the config but runs EDM's own σ grid and preconditioning, which an ε-predicting DDPM
# network was not trained for.
DIFFUSERS_SCHEDULERS = (
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
)
SAMPLER_NAMES = (*SAMPLERS, *DIFFUSERS_SCHEDULERS)

# Step counts at which each sampler gives its usual quality: the ancestral DDPM chain needs all of T,
# the high-order multistep solvers ~25 steps, the rest ~50.
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpm-solver": 25}
_DIFFUSERS_DEFAULT_STEPS = {"DDPMScheduler": 1000, "DPMSolverMultistepScheduler": 25,
                            "DPMSolverSinglestepScheduler": 25, "DEISMultistepScheduler": 25,
                            "UniPCMultistepScheduler": 25}


def sampler_name(name: str) -> str:
    """`name` as it is listed in `SAMPLER_NAMES` (class names match without regard to case)."""
    if name in SAMPLER_NAMES:
        return name
    by_lower = {listed.lower(): listed for listed in SAMPLER_NAMES}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")


def sampler_argument(value: str) -> str:
    """`sampler_name` for argparse: an unknown name is an argparse error listing the choices."""
    try:
        name = sampler_name(value)
        scheduler_for(name, DDPMFromScratchScheduler().config)  # a missing optional package shows up now
    except (ValueError, ImportError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


SAMPLER_HELP = (f"A project sampler ({', '.join(SAMPLERS)}) or a diffusers scheduler class: "
                f"{', '.join(DIFFUSERS_SCHEDULERS)}.")


def default_num_inference_steps(name: str) -> int:
    """The step count sampler `name` is usually run with."""
    name = sampler_name(name)
    return DEFAULT_STEPS.get(name) or _DIFFUSERS_DEFAULT_STEPS.get(name, 50)


def scheduler_for(name: str, config):
    """A fresh scheduler of sampler `name` built from a DDPM scheduler's `config`."""
    name = sampler_name(name)
    scheduler_class = SAMPLERS.get(name) or getattr(diffusers, name)
    try:
        return scheduler_class.from_config(config)
    except ImportError as error:  # DPMSolverSDEScheduler without torchsde: diffusers' placeholder raises
        raise ImportError(f"sampler {name} needs a package that is not installed: {' '.join(str(error).split())}") from None


def generate(pipeline, num_images: int, sampler: str, num_inference_steps: int, seed: int,
             batch_size: int, class_labels: list[int] | None = None, guidance_scale: float = 1.0,
             timesteps: list[int] | None = None) -> torch.Tensor:
    """`num_images` samples in [0, 1], image i drawn with generator seed `seed + i` whatever the batch size; for a
    class-conditional pipeline, image i of class ``class_labels[i]`` at ``guidance_scale``; with ``timesteps``,
    on that chain instead of the sampler's own `num_inference_steps`."""
    if class_labels is not None and len(class_labels) != num_images:
        raise ValueError(f"class_labels has {len(class_labels)} labels for {num_images} images")
    conditioning = {} if class_labels is None and guidance_scale == 1.0 else {"guidance_scale": guidance_scale}
    original = pipeline.scheduler
    pipeline.scheduler = scheduler_for(sampler, original.config)
    try:
        chunks = []
        for start in range(0, num_images, batch_size):
            count = min(batch_size, num_images - start)
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(count)]
            if class_labels is not None:
                conditioning["class_labels"] = class_labels[start:start + count]
            chain = {"num_inference_steps": num_inference_steps} if timesteps is None else {"timesteps": timesteps}
            chunks.append(pipeline(batch_size=count, generator=generators, output_type="pt", **chain,
                                   **conditioning).images.cpu())
    finally:
        pipeline.scheduler = original
    return torch.cat(chunks)
