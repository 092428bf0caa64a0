"""`DDPMFromScratchPipeline`: ancestral sampling from noise to images.

The sampling loop of Ho et al. (2020), Algorithm 2: draw x_T ~ N(0, I), then for
each timestep ask the network for ε_θ(x_t, t) and let the scheduler take the
reverse step x_t → x_{t-1}.

This module imports only torch, numpy, inspect, diffusers and its sibling ``pipeline_utils`` (the Hub mechanics
it shares with the toy pipelines) at module level, so that it ships verbatim inside every saved folder and Hub
repository (as ``pipeline.py``, beside ``pipeline_utils.py``) and loads with ``trust_remote_code``; see
``pipeline_utils`` for that layout. The loop talks to the scheduler only through diffusers' scheduler protocol
(``init_noise_sigma``, ``set_timesteps``, ``scale_model_input``, ``step``), so any diffusers scheduler whose config
is compatible can be swapped in.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch
from diffusers import (
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    ModelMixin,
    SchedulerMixin,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor

from .pipeline_utils import (
    _PACKAGE,
    LEARNED_VARIANCE_TYPES,
    HubPipelineMixin,
    check_pipeline_inputs,
    output_for_scheduler,
    scheduler_reads_variance,
    step_kwargs,
)

OUTPUT_TYPES = ("pil", "np", "pt")


class DDPMFromScratchPipeline(HubPipelineMixin, DiffusionPipeline):
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

    def _scheduler_reads_variance(self) -> bool:
        """Whether this pipeline's scheduler gets the U-Net's whole output (see `scheduler_reads_variance`)."""
        return scheduler_reads_variance(self.scheduler)

    def _check_variance_channels(self) -> None:
        config = self.unet.config
        in_channels, out_channels = config.get("in_channels"), config.get("out_channels")
        if in_channels is None or out_channels is None or not self._scheduler_reads_variance():
            return
        if out_channels != 2 * in_channels:
            raise ValueError(
                f"the scheduler's variance_type={self.scheduler.config.variance_type!r} reads the variance from"
                f" extra output channels, but the U-Net has out_channels={out_channels} for in_channels={in_channels}"
                f" (a learned variance needs {2 * in_channels}); use a fixed variance_type such as 'fixed_small'"
            )

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        timesteps: list[int] | None = None,
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
            timesteps (`list[int]`, *optional*):
                An explicit descending chain (e.g. Analytic-DPM's optimal trajectory) instead of
                `num_inference_steps`, for schedulers whose `set_timesteps` takes `timesteps`.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images.
        """
        check_pipeline_inputs(batch_size, generator, output_type, OUTPUT_TYPES)
        self._check_variance_channels()
        device = self._execution_device

        # Timesteps first: for σ-space schedulers (Euler, Heun, ...) init_noise_sigma depends on them.
        if timesteps is not None:
            if "timesteps" not in inspect.signature(self.scheduler.set_timesteps).parameters:
                raise ValueError(f"`timesteps` needs a scheduler whose set_timesteps takes them; "
                                 f"{type(self.scheduler).__name__}'s does not")
            self.scheduler.set_timesteps(timesteps=timesteps, device=device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
        # x_T ~ N(0, σ_init² I): σ_init is 1 for DDPM/DDIM but not for σ-space schedulers.
        sample = randn_tensor(self._image_shape(batch_size), generator=generator, device=device, dtype=self.unet.dtype)
        sample = sample * self.scheduler.init_noise_sigma

        extra_step_kwargs = step_kwargs(self.scheduler, generator)
        channels = sample.shape[1]
        reads_variance = self._scheduler_reads_variance()
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(sample, t)
            noise_pred = output_for_scheduler(self.unet(model_input, t).sample, channels, reads_variance)
            sample = self.scheduler.step(noise_pred, t, sample, **extra_step_kwargs).prev_sample

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
        be a DDPM scheduler: the bound is a property of the DDPM chain); other keyword arguments go through,
        among them ``num_inference_steps=K`` or ``timesteps=[...]`` for the bound of the respaced chain that
        `__call__` samples with the same argument.
        Needs the ddpm-from-scratch package itself, not only this file.
        """
        # Imported by name, not with an import statement: diffusers scans a remote-code file's import
        # statements and warns about every package it cannot import.
        import importlib

        try:
            variational_bound = importlib.import_module("ddpm_from_scratch.likelihood").variational_bound
        except ImportError as error:  # this file may be running from a Hub repo without the package
            raise ImportError("variational_bound needs `pip install ddpm-from-scratch`.") from error
        return variational_bound(self.unet, self.scheduler, images.to(self._execution_device), generator=generator,
                                 **kwargs)

    # ------------------------------------------------------------------------------------- plain diffusers

    @classmethod
    def from_diffusers(cls, pipeline: DiffusionPipeline) -> "DDPMFromScratchPipeline":
        r"""This package's pipeline for diffusers' own `DDPMPipeline` (`UNet2DModel` + `DDPMScheduler`): the inverse
        of `to_diffusers`.

        The U-Net becomes a `DDPMFromScratchUNet` with the same weights (`DDPMFromScratchUNet.from_unet2d`, which
        accepts UNet2DModel's own defaults and the DDPM paper's layout and refuses, naming it, any option the
        network cannot express); the scheduler becomes `DDPMFromScratchScheduler.from_config` of its config. For
        the same `generator` the samples equal the diffusers pipeline's to float rounding, and the variational
        bound is available at once. Needs the ddpm-from-scratch package (not only this file).
        """
        import importlib

        if _PACKAGE is None:
            raise ImportError("from_diffusers needs `pip install ddpm-from-scratch`.")
        unet_class = importlib.import_module(f"{_PACKAGE}.models.unet").DDPMFromScratchUNet
        ddpm_chain = importlib.import_module(f"{_PACKAGE}.likelihood").ddpm_chain
        unet = pipeline.unet if isinstance(pipeline.unet, unet_class) else unet_class.from_unet2d(pipeline.unet)
        scheduler = ddpm_chain(pipeline.scheduler)  # the same mapping the bound uses
        converted = cls(unet=unet, scheduler=scheduler)
        converted.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
        return converted

    def to_diffusers(self) -> DDPMPipeline:
        r"""The same model as diffusers' own `DDPMPipeline`: no code from this package is needed to load or run it.

        The U-Net becomes a `UNet2DModel` with the same weights (`DDPMFromScratchUNet.to_unet2d`); a
        `UNet2DModel` is copied. The scheduler becomes diffusers' `DDPMScheduler` with the same config, so for
        the same `generator` and `num_inference_steps` the samples are the same up to float rounding. Two
        settings differ in diffusers 0.42 (see `DDPMFromScratchScheduler`): ``variance_type="fixed_large_log"``
        becomes the equivalent ``"fixed_large"`` (diffusers' log variant gives NaN samples), and with
        ``timestep_spacing="trailing"`` diffusers takes one extra step for some `num_inference_steps` (e.g. 61).
        A scheduler that already is a diffusers scheduler (DDIM, ...) is copied as it is.

        A learned-variance model (``out_channels = 2 × in_channels``, ``variance_type="learned_range"``) becomes
        ``DDPMScheduler(variance_type="learned_range")``, which reads the variance channels exactly as this
        package's scheduler does, respaced chains included. With any other scheduler diffusers' `DDPMPipeline`
        would hand it ε and the variance together (it does not split them, as `DDPMFromScratchPipeline` does),
        so that case warns; with this package's scheduler and a fixed ``variance_type`` it raises `ValueError`.

        Save it with `save_pretrained` or push it with `push_to_hub`; ``scripts/export_diffusers.py`` does both.
        """
        import copy

        if hasattr(self.unet, "to_unet2d"):
            unet = self.unet.to_unet2d()
        elif isinstance(self.unet, UNet2DModel):
            unet = copy.deepcopy(self.unet)
        else:
            raise TypeError(f"to_diffusers needs a DDPMFromScratchUNet or UNet2DModel, got {type(self.unet).__name__}")
        learns_variance = unet.config.out_channels == 2 * unet.config.in_channels
        scheduler_class = type(self.scheduler)
        if scheduler_class.__module__.split(".")[0] == "diffusers":
            scheduler = scheduler_class.from_config(self.scheduler.config)
        else:
            config = dict(self.scheduler.config)
            # Our pipeline would sample this pair with ε alone and the fixed variance, but the DDPMScheduler it
            # becomes would get all 2C channels from DDPMPipeline and read them as ε: a mismatch, not an export.
            if learns_variance and config.get("variance_type") not in LEARNED_VARIANCE_TYPES:
                raise ValueError(
                    f"the U-Net predicts ε and a learned variance (out_channels={unet.config.out_channels} for"
                    f" in_channels={unet.config.in_channels}) but the scheduler has"
                    f" variance_type={config.get('variance_type')!r}: diffusers' DDPMPipeline would read the whole"
                    " output as ε. Give the scheduler the learned variance_type the network was trained with"
                    " ('learned_range' or 'learned')."
                )
            if config.get("variance_type") == "fixed_large_log":
                config["variance_type"] = "fixed_large"
            if config.pop("gamma", None) is not None:
                warnings.warn(
                    "Analytic-DPM's variance σ*² (AnalyticDPMScheduler) cannot be expressed in diffusers' DDPMScheduler:"
                    " the export samples with its lower bound σ² = β̃ (variance_type='fixed_small').",
                    UserWarning,
                    stacklevel=2,
                )
            scheduler = DDPMScheduler.from_config(config)
        if learns_variance and not scheduler_reads_variance(scheduler):
            warnings.warn(
                f"the U-Net outputs ε and a learned variance ({unet.config.out_channels} channels), but diffusers'"
                f" DDPMPipeline hands that whole output to {type(scheduler).__name__}"
                f" (variance_type={scheduler.config.get('variance_type')!r}), which reads it as ε: its samples will be"
                " wrong or fail. Export with DDPMFromScratchScheduler(variance_type='learned_range') (it becomes"
                " DDPMScheduler(variance_type='learned_range')); DDPMFromScratchPipeline itself hands other samplers"
                " ε only.",
                UserWarning,
                stacklevel=2,
            )
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return pipe

    def postprocess(self, sample: torch.Tensor, output_type: str = "pil") -> list | np.ndarray | torch.Tensor:
        """Map model space [-1, 1] to image space [0, 1] and convert to `output_type`."""
        images = (sample / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).float().numpy()
        if output_type == "pil":
            return self.numpy_to_pil(images)
        return images
