"""`DDPMFromScratchPipeline`: ancestral sampling from noise to images.

The sampling loop of Ho et al. (2020), Algorithm 2: draw x_T ~ N(0, I), then for
each timestep ask the network for ε_θ(x_t, t) and let the scheduler take the
reverse step x_t → x_{t-1}.

This module imports only torch and diffusers, so that it can be shipped verbatim
inside a Hub repository and loaded with ``trust_remote_code``. The loop talks to
the scheduler only through diffusers' scheduler protocol (``init_noise_sigma``,
``set_timesteps``, ``scale_model_input``, ``step``), so any diffusers scheduler
whose config is compatible can be swapped in.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, ModelMixin, SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")


class DDPMFromScratchPipeline(DiffusionPipeline):
    r"""
    Unconditional image generation with a DDPM.

    Args:
        unet ([`DDPMFromScratchUNet`] or any model with the same `forward(sample, timestep).sample` contract):
            The noise predictor ε_θ(x_t, t). Its config gives the image shape (`in_channels`, `sample_size`).
        scheduler ([`SchedulerMixin`]):
            The reverse process; [`DDPMFromScratchScheduler`] by default, or any diffusers scheduler built from
            its config (DDIM, DPM-Solver, Euler, UniPC, ...).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: ModelMixin, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def _image_shape(self, batch_size: int) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (batch_size, self.unet.config.in_channels, height, width)

    @staticmethod
    def _check_inputs(
        batch_size: int, generator: torch.Generator | list[torch.Generator] | None, output_type: str
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators but `batch_size` is {batch_size}: "
                "pass one generator per image."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images by running the reverse process from pure noise.

        Args:
            batch_size (`int`, defaults to 1):
                The number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes generation deterministic. A list gives each image its own generator, so image `i` of a batch
                equals the single image drawn with `generator[i]`.
            num_inference_steps (`int`, defaults to 1000):
                The number of denoising steps. Fewer steps than the scheduler's `num_train_timesteps` respace the
                reverse process.
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (a list of `PIL.Image`, mode `"L"` for 1-channel models), `"np"` (an array of shape
                `(B, H, W, C)` in [0, 1]) or `"pt"` (a tensor of shape `(B, C, H, W)` in [0, 1]).
            return_dict (`bool`, defaults to `True`):
                Return an [`~pipelines.ImagePipelineOutput`] rather than a plain tuple.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images.
        """
        self._check_inputs(batch_size, generator, output_type)
        device = self._execution_device

        # Timesteps first: for σ-space schedulers (Euler, Heun, ...) init_noise_sigma depends on them.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # x_T ~ N(0, σ_init² I): σ_init is 1 for DDPM/DDIM but not for σ-space schedulers.
        sample = randn_tensor(self._image_shape(batch_size), generator=generator, device=device, dtype=self.unet.dtype)
        sample = sample * self.scheduler.init_noise_sigma

        step_kwargs = self._step_kwargs(generator)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(sample, t)
            noise_pred = self.unet(model_input, t).sample
            sample = self.scheduler.step(noise_pred, t, sample, **step_kwargs).prev_sample

        images = self.postprocess(sample, output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def variational_bound(
        self, images: torch.Tensor, generator: torch.Generator | None = None, **kwargs
    ):
        r"""The variational bound −log p_θ(x_0) ≤ L_T + Σ_t L_{t−1} + L_0 of `images`, in bits/dim.

        `images` are in [-1, 1] on the 8-bit grid, shape (B, C, H, W). Calls
        `ddpm_from_scratch.likelihood.variational_bound` with this pipeline's U-Net and scheduler (which must
        be a DDPM scheduler: the bound is a property of the DDPM chain); other keyword arguments go through.
        Needs the ddpm-from-scratch package itself, not only this file.
        """
        try:
            from ddpm_from_scratch.likelihood import variational_bound
        except ImportError as error:  # this file may be running from a Hub repo without the package
            raise ImportError("variational_bound needs `pip install ddpm-from-scratch`.") from error
        return variational_bound(self.unet, self.scheduler, images.to(self._execution_device), generator=generator,
                                 **kwargs)

    def _step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None) -> dict:
        # Deterministic multistep solvers (UniPC, ...) take no generator in `step`.
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if accepts_generator else {}

    def postprocess(self, sample: torch.Tensor, output_type: str = "pil") -> list | np.ndarray | torch.Tensor:
        """Map model space [-1, 1] to image space [0, 1] and convert to `output_type`."""
        images = (sample / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            return self.numpy_to_pil(images)
        return images
