"""`DDPMFromScratchPipeline`: ancestral sampling from noise to images.

The sampling loop of Ho et al. (2020), Algorithm 2: draw x_T ~ N(0, I), then for
each timestep ask the network for ε_θ(x_t, t) and let the scheduler take the
reverse step x_t → x_{t-1}.

This module imports only torch, numpy, inspect, diffusers and its siblings ``pipeline_utils`` (the Hub mechanics
it shares with the toy pipelines), ``guidance`` and ``chain_prefix`` at module level, so that it ships verbatim inside every saved folder and Hub
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
from .chain_prefix import check_prefix_steps, scheduler_past_prefix, timesteps_past_prefix
from .guidance import check_guidance_scale, guided_model_output

OUTPUT_TYPES = ("pil", "np", "pt")


class DDPMFromScratchPipeline(HubPipelineMixin, DiffusionPipeline):
    r"""
    Image generation with a DDPM: unconditional, or class-conditional with classifier-free guidance.

    Args:
        unet ([`DDPMFromScratchUNet`] or any model with the same `forward(sample, timestep).sample` contract):
            The noise predictor ε_θ(x_t, t), or ε_θ(x_t, t, c) when its config has `num_class_embeds` (the last
            class index being the null label ∅). Its config gives the image shape (`in_channels`, `sample_size`).
        scheduler ([`SchedulerMixin`]):
            The reverse process; [`DDPMFromScratchScheduler`] by default, or any diffusers scheduler built from
            its config (DDIM, DPM-Solver, Euler, UniPC, ...).
        id2label (`dict[int, str]`, *optional*):
            The names of a class-conditional model's classes, as diffusers' `DiTPipeline` takes them; saved in
            model_index.json, and accepted as `class_labels` (see `get_label_ids`).
        log_snr_prefix_steps (`int`, defaults to 0):
            N > 0 when the scheduler's first N timesteps are a high-SNR prefix added below the schedule the model
            was designed on (``train.py --log_snr_prefix_steps N``; see ``chain_prefix``). The network and the bound
            use the whole chain; a call with ``num_inference_steps`` ≤ T − N samples on the chain past the prefix,
            with the sampler's own spacing there and the network asked at timestep s + N. Saved in
            model_index.json.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: ModelMixin, scheduler: SchedulerMixin, id2label: dict | None = None,
                 log_snr_prefix_steps: int = 0):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        if id2label is not None:
            # JSON keys are strings: the same mapping whether it came from Python or from model_index.json.
            self.register_to_config(id2label={str(int(k)): str(v) for k, v in id2label.items()})
        if log_snr_prefix_steps and check_prefix_steps(log_snr_prefix_steps, scheduler.config.num_train_timesteps):
            self.register_to_config(log_snr_prefix_steps=int(log_snr_prefix_steps))

    @property
    def log_snr_prefix_steps(self) -> int:
        """N, the high-SNR prefix's timesteps that samplers step past (0: none)."""
        return int(self.config.get("log_snr_prefix_steps", 0))

    def _prefix_for(self, num_inference_steps: int | None, timesteps) -> int:
        """The timesteps a call skips: N when it spaces `num_inference_steps` ≤ T − N steps itself, else 0 (an
        explicit chain, or more steps than the chain past the prefix has: the whole chain)."""
        prefix = check_prefix_steps(self.log_snr_prefix_steps, self.scheduler.config.num_train_timesteps)
        if timesteps is not None or num_inference_steps is None:
            return 0
        return prefix if num_inference_steps <= self.scheduler.config.num_train_timesteps - prefix else 0

    @property
    def num_classes(self) -> int | None:
        """The classes a class-conditional U-Net knows (its `num_class_embeds` less the null label); None if
        unconditional."""
        rows = self.unet.config.get("num_class_embeds")
        return None if rows is None else rows - 1

    @property
    def id2label(self) -> dict[int, str] | None:
        names = self.config.get("id2label")
        return None if names is None else {int(k): v for k, v in names.items()}

    def get_label_ids(self, label) -> list[int]:
        """Class indices for class names or indices (one, or a list), as `DiTPipeline.get_label_ids`.

        Raises:
            ValueError: for an unconditional model, an index outside [0, num_classes), or a name not in `id2label`.
        """
        if self.num_classes is None:
            raise ValueError("`class_labels` given to an unconditional model (its U-Net has no num_class_embeds)")
        names = self.id2label
        if isinstance(label, (int, str)) or (isinstance(label, torch.Tensor) and label.dim() == 0):
            label = [label]
        ids = []
        for item in list(label):
            item = item.item() if isinstance(item, torch.Tensor) else item
            if isinstance(item, str):
                matches = [k for k, v in (names or {}).items() if v == item]
                if not matches:
                    known = ", ".join((names or {}).values()) or "none: this model has no id2label"
                    raise ValueError(f"`class_labels`: {item!r} is not a class name of this model (known: {known})")
                ids.append(matches[0])
            elif isinstance(item, bool) or not isinstance(item, (int, np.integer)):
                raise ValueError(f"`class_labels`: {item!r} is neither a class index nor a class name")
            elif not 0 <= int(item) < self.num_classes:
                raise ValueError(f"`class_labels`: {int(item)} is outside [0, {self.num_classes}), the classes of "
                                 "this model")
            else:
                ids.append(int(item))
        return ids

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
        class_labels=None,
        guidance_scale: float = 1.0,
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
                reverse process. With a high-SNR prefix of N timesteps (`log_snr_prefix_steps`), up to T − N
                steps are spaced over the chain past the prefix; more take the whole chain.
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (a list of `PIL.Image`, mode `"L"` for 1-channel models), `"np"` (an array of shape
                `(B, H, W, C)` in [0, 1]) or `"pt"` (a tensor of shape `(B, C, H, W)` in [0, 1]).
            return_dict (`bool`, defaults to `True`):
                Return an [`~pipelines.ImagePipelineOutput`] rather than a plain tuple.
            timesteps (`list[int]`, *optional*):
                An explicit descending chain (e.g. Analytic-DPM's optimal trajectory) instead of
                `num_inference_steps`, for schedulers whose `set_timesteps` takes `timesteps`.
            class_labels (`int`, `str` or a list of `batch_size` of them, *optional*):
                The class of each image, for a class-conditional U-Net: indices, or names from `id2label`. One
                label is used for the whole batch; a list with the default `batch_size` sets it (one image per
                label). None on a conditional model samples unconditionally (∅).
            guidance_scale (`float`, defaults to 1.0):
                s of classifier-free guidance, ε̃ = ε(x, ∅) + s·(ε(x, c) − ε(x, ∅)): 1 is the conditional model,
                larger trades diversity for fidelity. Both branches run in one batched network call.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images.
        """
        if isinstance(class_labels, (list, tuple)) and batch_size == 1:
            batch_size = len(class_labels)  # `pipe(class_labels=[7, 7, 3])`: one image per label
        check_pipeline_inputs(batch_size, generator, output_type, OUTPUT_TYPES)
        labels = self._class_labels_for(class_labels, batch_size, check_guidance_scale(guidance_scale))
        self._check_variance_channels()
        device = self._execution_device

        prefix = self._prefix_for(num_inference_steps, timesteps)
        scheduler = scheduler_past_prefix(self.scheduler, prefix)  # the scheduler itself when prefix = 0
        # Timesteps first: for σ-space schedulers (Euler, Heun, ...) init_noise_sigma depends on them.
        if timesteps is not None:
            if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
                raise ValueError(f"`timesteps` needs a scheduler whose set_timesteps takes them; "
                                 f"{type(scheduler).__name__}'s does not")
            scheduler.set_timesteps(timesteps=timesteps, device=device)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device)
        # x_T ~ N(0, σ_init² I): σ_init is 1 for DDPM/DDIM but not for σ-space schedulers.
        sample = randn_tensor(self._image_shape(batch_size), generator=generator, device=device, dtype=self.unet.dtype)
        sample = sample * scheduler.init_noise_sigma

        extra_step_kwargs = step_kwargs(scheduler, generator)
        channels = sample.shape[1]
        reads_variance = self._scheduler_reads_variance()
        for t in self.progress_bar(scheduler.timesteps):
            model_input = scheduler.scale_model_input(sample, t)
            network_t = t + prefix  # timestep s past the prefix is timestep s + N of the chain the network knows
            if self.num_classes is None:
                model_output = self.unet(model_input, network_t).sample
            else:
                model_output = guided_model_output(self.unet, model_input, network_t, labels, self.num_classes,
                                                   guidance_scale)
            noise_pred = output_for_scheduler(model_output, channels, reads_variance)
            sample = scheduler.step(noise_pred, t, sample, **extra_step_kwargs).prev_sample

        images = self.postprocess(sample, output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def _class_labels_for(self, class_labels, batch_size: int, guidance_scale: float) -> torch.Tensor | None:
        """The batch's class indices on the execution device, refusing labels the model cannot take (before
        anything is drawn)."""
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError("`class_labels` given to an unconditional model (its U-Net has no num_class_embeds)")
            if guidance_scale != 1.0:
                raise ValueError(f"`guidance_scale`={guidance_scale} needs a class-conditional model; this one is "
                                 "unconditional")
            return None
        if class_labels is None:
            return None
        ids = self.get_label_ids(class_labels)
        if len(ids) == 1:
            ids = ids * batch_size
        if len(ids) != batch_size:
            raise ValueError(f"`class_labels` has {len(ids)} labels but `batch_size` is {batch_size}: give one "
                             "label, or one per image.")
        return torch.tensor(ids, dtype=torch.long, device=self._execution_device)

    def variational_bound(
        self, images: torch.Tensor, generator: torch.Generator | None = None, **kwargs
    ):
        r"""The variational bound −log p_θ(x_0) ≤ L_T + Σ_t L_{t−1} + L_0 of `images`, in bits/dim.

        `images` are in [-1, 1] on the 8-bit grid, shape (B, C, H, W). Calls
        `ddpm_from_scratch.likelihood.variational_bound` with this pipeline's U-Net and scheduler (the bound is a
        property of the DDPM chain the scheduler's config describes, whatever sampler it is); other keyword
        arguments go through, among them ``num_inference_steps=K`` or ``timesteps=[...]`` for the bound of the
        respaced DDPM chain (the one `__call__` samples when the scheduler is a DDPM one), and ``class_labels``
        (indices or `id2label` names, one per image) for a class-conditional model's bound given the label.
        Needs the ddpm-from-scratch package itself, not only this file.
        """
        # Imported by name, not with an import statement: diffusers scans a remote-code file's import
        # statements and warns about every package it cannot import.
        import importlib

        try:
            likelihood = importlib.import_module("ddpm_from_scratch.likelihood")
        except ImportError as error:  # this file may be running from a Hub repo without the package
            raise ImportError("variational_bound needs `pip install ddpm-from-scratch`.") from error
        if kwargs.get("class_labels") is not None:
            labels = self._class_labels_for(kwargs["class_labels"], images.shape[0], 1.0)
            kwargs["class_labels"] = labels
        chain = likelihood.ddpm_chain(self.scheduler)  # the DDPM chain the bound is of, whatever the sampler
        prefix = self._prefix_for(kwargs.get("num_inference_steps"), kwargs.get("timesteps"))
        if prefix:  # the DDPM chain's own K steps past the prefix, as the bound spaces them without one
            kwargs["timesteps"] = timesteps_past_prefix(chain, kwargs.pop("num_inference_steps"), prefix)
        return likelihood.variational_bound(self.unet, chain, images.to(self._execution_device), generator=generator,
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

        A pipeline with a high-SNR prefix (`log_snr_prefix_steps`) warns: `DDPMPipeline` spaces its steps over the
        whole chain, prefix included.

        A class-conditional model is refused (`ValueError`): `DDPMPipeline` takes no labels and would sample only
        the null label. Its U-Net alone converts, ``pipe.unet.to_unet2d()`` (a `UNet2DModel` with
        ``num_class_embeds``, called with ``class_labels``).
        """
        import copy

        if self.num_classes is not None:
            raise ValueError(
                "diffusers' DDPMPipeline takes no class labels, so this class-conditional pipeline has no plain "
                "diffusers equivalent; export its U-Net alone with pipe.unet.to_unet2d() (a UNet2DModel with "
                f"num_class_embeds={self.unet.config.num_class_embeds}, the last index the null label)"
            )

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
        if self.log_snr_prefix_steps:
            warnings.warn(
                f"diffusers' DDPMPipeline cannot skip the high-SNR prefix (log_snr_prefix_steps="
                f"{self.log_snr_prefix_steps}): it spaces num_inference_steps over all"
                f" {self.scheduler.config.num_train_timesteps} timesteps (steps_offset cannot express it: with"
                " 'leading' spacing it indexes past the chain's end).",
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
