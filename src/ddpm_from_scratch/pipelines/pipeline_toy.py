# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""Pipelines for Sohl-Dickstein et al.'s (2015) toy problems: binary sequences and 2-D points.

`BinomialDiffusionPipeline` runs the binomial reverse chain x_T ~ Bernoulli(p)^L, x_{t'} ~ B(f_b(x_t, t));
`PointDiffusionPipeline` runs a Gaussian reverse chain over vectors with any diffusers scheduler
(this package's DDPM scheduler reads a learned variance). Both save, load and push like
`DDPMFromScratchPipeline`: they share its Hub mechanics (`pipeline_utils.HubPipelineMixin`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_utils import (
    HubPipelineMixin,
    check_pipeline_inputs,
    output_for_scheduler,
    scheduler_reads_variance,
    step_kwargs,
)

TOY_OUTPUT_TYPES = ("np", "pt")


@dataclass
class ToyPipelineOutput(BaseOutput):
    """Output of the toy pipelines: ``samples`` of shape ``(batch_size, length)``, a numpy array or a tensor."""

    samples: np.ndarray | torch.Tensor


class _VectorPipeline(HubPipelineMixin, DiffusionPipeline):
    """What both toy pipelines share: the components, input checks and the output."""

    def __init__(self, unet: ModelMixin, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def _check_inputs(self, batch_size: int, generator, output_type: str) -> None:
        check_pipeline_inputs(batch_size, generator, output_type, TOY_OUTPUT_TYPES, one_generator=True)

    def _num_inference_steps(self, num_inference_steps: int | None) -> int:
        """The chain's length: the training chain's T unless given (0 is refused by the scheduler, not taken as T)."""
        return self.scheduler.config.num_train_timesteps if num_inference_steps is None else num_inference_steps

    def _shape(self, batch_size: int) -> tuple[int, int]:
        return (batch_size, self.unet.config.in_features)

    def _output(self, sample: torch.Tensor, output_type: str, return_dict: bool):
        samples = sample if output_type == "pt" else sample.cpu().float().numpy()
        self.maybe_free_model_hooks()
        return ToyPipelineOutput(samples=samples) if return_dict else (samples,)


class BinomialDiffusionPipeline(_VectorPipeline):
    r"""Sample binary sequences by binomial diffusion (Sohl-Dickstein et al. 2015).

    Args:
        unet ([`ToyDenoiser`] or any model with ``forward(sample, timestep).sample``): logits, one per bit.
        scheduler ([`BinomialDiffusionScheduler`]): the binomial chain.
    """

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator: torch.Generator | None = None,
                 num_inference_steps: int | None = None, output_type: str = "np", return_dict: bool = True):
        r"""Run the reverse chain from x_T ~ Bernoulli(p) for each bit.

        Args:
            batch_size: sequences to draw.
            generator: one `torch.Generator` for every draw (the start and each step's bits).
            num_inference_steps: steps of the reverse chain; defaults to the whole training chain T (a shorter
                chain composes the forward kernels exactly but asks the network about fewer x_t).
            output_type: ``"np"`` (an array of 0/1 floats) or ``"pt"`` (a tensor).
            return_dict: return a [`ToyPipelineOutput`] rather than a tuple.
        """
        self._check_inputs(batch_size, generator, output_type)
        device = self._execution_device
        self.scheduler.set_timesteps(self._num_inference_steps(num_inference_steps), device=device)
        sample = self.scheduler.prior_sample(self._shape(batch_size), generator=generator, device=device,
                                             dtype=self.unet.dtype)
        for t in self.progress_bar(self.scheduler.timesteps):
            logits = self.unet(sample, t).sample
            sample = self.scheduler.step(logits, t, sample, generator=generator).prev_sample
        return self._output(sample, output_type, return_dict)


class PointDiffusionPipeline(_VectorPipeline):
    r"""Sample real-valued vectors (2-D points) by Gaussian diffusion.

    Args:
        unet ([`ToyDenoiser`] or any model with ``forward(sample, timestep).sample``): ε, then (for a learned
            variance) v.
        scheduler ([`DDPMFromScratchScheduler`] or any diffusers scheduler built from its config): with
            ``clip_sample=False``, since points are not confined to [−1, 1].
    """

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator: torch.Generator | None = None,
                 num_inference_steps: int | None = None, output_type: str = "np", return_dict: bool = True):
        r"""Run the reverse chain from x_T ~ N(0, σ_init² I).

        Args:
            batch_size: points to draw.
            generator: one `torch.Generator` for every draw.
            num_inference_steps: defaults to the training chain's T.
            output_type: ``"np"`` or ``"pt"``.
            return_dict: return a [`ToyPipelineOutput`] rather than a tuple.
        """
        self._check_inputs(batch_size, generator, output_type)
        device = self._execution_device
        self.scheduler.set_timesteps(self._num_inference_steps(num_inference_steps), device=device)
        sample = randn_tensor(self._shape(batch_size), generator=generator, device=device, dtype=self.unet.dtype)
        sample = sample * self.scheduler.init_noise_sigma
        dims = sample.shape[1]
        reads_variance = scheduler_reads_variance(self.scheduler)
        extra_step_kwargs = step_kwargs(self.scheduler, generator)
        for t in self.progress_bar(self.scheduler.timesteps):
            output = self.unet(self.scheduler.scale_model_input(sample, t), t).sample
            output = output_for_scheduler(output, dims, reads_variance)
            sample = self.scheduler.step(output, t, sample, **extra_step_kwargs).prev_sample
        return self._output(sample, output_type, return_dict)
