"""`DDPMFromScratchPipeline`: ancestral sampling from noise to images.

The sampling loop of Ho et al. (2020), Algorithm 2: draw x_T ~ N(0, I), then for
each timestep ask the network for ε_θ(x_t, t) and let the scheduler take the
reverse step x_t → x_{t-1}.

This module imports only torch, numpy, inspect and diffusers at module level, so that
it can be shipped verbatim inside a Hub repository (as ``pipeline.py``) and loaded with
``trust_remote_code``. The loop talks to the scheduler only through diffusers' scheduler
protocol (``init_noise_sigma``, ``set_timesteps``, ``scale_model_input``, ``step``), so
any diffusers scheduler whose config is compatible can be swapped in.

The Hub. A repo pushed by this package ships the code of its components, in diffusers'
layout for remote code (see :func:`remote_code_layout`)::

    model_index.json                 {"_class_name": ["pipeline", "DDPMFromScratchPipeline"],
                                      "unet": ["unet", "DDPMFromScratchUNet"],
                                      "scheduler": ["scheduling_ddpm", "DDPMFromScratchScheduler"]}
    pipeline.py                      this module
    unet/unet.py                     ddpm_from_scratch/unet.py
    scheduler/scheduling_ddpm.py     ddpm_from_scratch/scheduling_ddpm.py

so that it loads three ways:

1. With ddpm-from-scratch installed, ``DDPMFromScratchPipeline.from_pretrained(repo)``
   runs no code from the repo: :meth:`~DDPMFromScratchPipeline.download` fetches the files
   and :meth:`~DDPMFromScratchPipeline.load_config` maps the entries above back to the
   package's modules (``ddpm_from_scratch.unet``, ...).
2. With only diffusers, ``DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)``
   imports the shipped files (and refuses to without ``trust_remote_code``).
3. Without custom code, :meth:`~DDPMFromScratchPipeline.to_diffusers` gives diffusers' own
   ``DDPMPipeline`` with the same samples.
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

OUTPUT_TYPES = ("pil", "np", "pt")
# Variance types whose σ_t² the network outputs in extra channels (ε first, then the variance output).
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")

# The package this module belongs to ("ddpm_from_scratch"), or None when it runs as a copy
# (``pipeline.py`` of a Hub repo loaded with trust_remote_code, ``diffusers_modules.local.pipeline``).
_PACKAGE = __name__.rpartition(".")[0] if __name__.rpartition(".")[2] == "pipeline_ddpm" else None

# Where a component's code lives in a Hub repo: ``<component>/<stem>.py``, declared in
# model_index.json as ``[<stem>, <class>]``; the pipeline's own code is ``pipeline.py``.
PIPELINE_CODE_STEM = "pipeline"
# File stem in a Hub repo -> module of the package with the same code.
_PACKAGE_MODULES = {"pipeline": ("pipeline_ddpm", "pipeline_toy"), "pipeline_ddpm": ("pipeline_ddpm",),
                    "pipeline_toy": ("pipeline_toy",), "unet": ("unet",), "scheduling_ddpm": ("scheduling_ddpm",),
                    "scheduling_analytic_dpm": ("scheduling_analytic_dpm",),
                    "toy_models": ("toy_models",), "scheduling_binomial": ("scheduling_binomial",)}
# Libraries whose classes diffusers imports itself: no code to ship for them.
_LIBRARIES = ("diffusers", "transformers", "onnxruntime")


def _is_component_entry(key: str, value) -> bool:
    return not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2


def remote_code_layout(
    model_index: dict, module_files: dict[str, str], pipeline_file: str | None = None
) -> tuple[dict, dict[str, str]]:
    r"""Point a pipeline's `model_index` at component code shipped in its repo (diffusers' remote-code layout).

    Args:
        model_index: the contents of ``model_index.json``.
        module_files: module name as model_index.json names a component's library (e.g.
            ``"ddpm_from_scratch.unet"``) -> the file with its source.
        pipeline_file: the source of the pipeline class, shipped as ``pipeline.py``; `None` to leave
            ``_class_name`` (and any ``pipeline.py``) alone.

    Returns:
        The new model_index and ``{path in the repo: source file}``: ``_class_name`` becomes
        ``["pipeline", name]`` with the pipeline's code in ``pipeline.py``, and a component
        ``name: [module, class]`` with a known module becomes ``name: [stem, class]`` with the module's code
        in ``name/stem.py`` (stem: the module's last dotted part). Other entries are kept as they are.
    """
    index = dict(model_index)
    files: dict[str, str] = {}
    pipeline = index.get("_class_name")
    if isinstance(pipeline, (list, tuple)) and len(pipeline) == 2:
        pipeline = pipeline[1]
    if pipeline_file is not None and isinstance(pipeline, str):
        index["_class_name"] = [PIPELINE_CODE_STEM, pipeline]
        files[f"{PIPELINE_CODE_STEM}.py"] = pipeline_file
    for name, value in model_index.items():
        if _is_component_entry(name, value) and value[0] in module_files:
            stem = value[0].rpartition(".")[2]
            index[name] = [stem, value[1]]
            files[f"{name}/{stem}.py"] = module_files[value[0]]
            for sibling in _relative_imports(module_files[value[0]]):
                files[f"{name}/{sibling}.py"] = _sibling_file(module_files[value[0]], sibling)
    return index, files


def _relative_imports(source_file: str) -> list[str]:
    """The sibling modules a component file imports (``from .scheduling_ddpm import ...``): diffusers' remote-code
    loader finds them in the component's folder, so they ship there beside it."""
    import re

    with open(source_file, encoding="utf-8") as file:
        return sorted(set(re.findall(r"^from \.(\w+) import", file.read(), flags=re.MULTILINE)))


def _sibling_file(source_file: str, module: str) -> str:
    import os

    return os.path.join(os.path.dirname(source_file), f"{module}.py")


def scheduler_reads_variance(scheduler: SchedulerMixin) -> bool:
    """Whether `scheduler` takes a learned variance from the model output's extra channels.

    Only DDPM's ancestral step does, for Σ_θ = σ_t² I with log σ_t² = f log β_t + (1 − f) log β̃_t,
    f = (v + 1)/2 (Nichol & Dhariwal 2021): this package's scheduler and diffusers' ``DDPMScheduler`` with
    ``variance_type`` "learned" or "learned_range". Such a scheduler must get all 2C channels (ε, then v).
    Every other sampler (DDIM, DPM-Solver, Euler, UniPC, …) expects ε alone and must get the first C:
    DDIMScheduler reads whatever it is given as ε (it does not split at all), and
    DPMSolverMultistepScheduler keeps ``[:, :3]``, right only for RGB.
    """
    # This package's scheduler is recognised by its `split_model_output`, not by isinstance: this file may
    # run as a Hub repo's remote code, where ddpm_from_scratch cannot be imported.
    reads = isinstance(scheduler, DDPMScheduler) or hasattr(scheduler, "split_model_output")
    return reads and scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES


class HubPipelineMixin:
    r"""The Hub mechanics of this package's pipelines: download, save, push, and load with or without the package.

    Put it before `DiffusionPipeline` in a pipeline's bases (``class P(HubPipelineMixin, DiffusionPipeline)``).
    A repo pushed from such a pipeline ships its components' code and the pipeline's own file in diffusers'
    remote-code layout (see :func:`remote_code_layout`); with ddpm-from-scratch installed, `from_pretrained`
    maps those entries back to the package's modules and runs no code from the repo.
    """


    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        r"""Download a pipeline repo into the Hugging Face cache and return its snapshot folder.

        With ddpm-from-scratch installed this fetches ``model_index.json`` and the component folders (not the
        ``*.py`` files a repo ships for remote code: the package's own modules are used), so a repo pushed by
        this package loads without ``trust_remote_code``. diffusers' own `download` refuses such a repo unless
        its code may run, whatever is installed (diffusers issue #2025). ``revision``, ``token``,
        ``cache_dir``, ``proxies``, ``force_download`` and ``local_files_only`` mean what they mean in
        diffusers, and so does ``HF_HUB_OFFLINE=1``; when the Hub cannot be reached the cached snapshot is used.
        Components passed to `from_pretrained` (``unet=...``) are not downloaded.

        When this file runs as a repo's remote code, or with ``custom_pipeline``, it is diffusers' `download`.
        """
        if _PACKAGE is None or kwargs.get("custom_pipeline") is not None:
            return super().download(pretrained_model_name, **kwargs)
        import json
        import os
        import re

        from huggingface_hub import hf_hub_download, snapshot_download

        hub_kwargs = {name: kwargs.get(name) for name in ("cache_dir", "proxies", "token", "revision")}
        hub_kwargs["force_download"] = bool(kwargs.get("force_download"))
        hub_kwargs["local_files_only"] = bool(kwargs.get("local_files_only"))
        index_file = hf_hub_download(pretrained_model_name, cls.config_name, **hub_kwargs)
        with open(index_file, encoding="utf-8") as file:
            index = json.load(file)
        # The snapshot folder is named by its commit: pin the rest of the download to the same commit.
        commit = os.path.basename(os.path.dirname(index_file))
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            hub_kwargs["revision"] = commit
        components = [name for name, value in index.items() if _is_component_entry(name, value)]
        allow_patterns = [cls.config_name] + [f"{name}/*" for name in components if name not in kwargs]
        return snapshot_download(pretrained_model_name, allow_patterns=allow_patterns, ignore_patterns=["*.py"],
                                 **hub_kwargs)

    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        r"""`ConfigMixin.load_config`, with a Hub repo's remote-code entries mapped to the installed package.

        In a repo pushed by this package ``model_index.json`` names the code shipped in the repo
        (``"unet": ["unet", "DDPMFromScratchUNet"]``, ``"_class_name": ["pipeline", ...]``); with the package
        installed these become ``["ddpm_from_scratch.unet", "DDPMFromScratchUNet"]`` and a plain class name, so
        `from_pretrained` imports the package instead of running the repo's files.
        """
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        if isinstance(loaded, tuple):
            return (cls._package_entries(loaded[0]), *loaded[1:])
        return cls._package_entries(loaded)

    @staticmethod
    def _package_entries(config: dict) -> dict:
        if _PACKAGE is None:
            return config
        import importlib

        def package_module(library: str, class_name: str) -> str | None:
            if library.split(".")[0] in _LIBRARIES or library.startswith(f"{_PACKAGE}."):
                return None
            for module in _PACKAGE_MODULES.get(library.rpartition(".")[2], ()):
                if hasattr(importlib.import_module(f"{_PACKAGE}.{module}"), class_name):
                    return f"{_PACKAGE}.{module}"
            return None

        config = dict(config)
        pipeline = config.get("_class_name")
        if isinstance(pipeline, (list, tuple)) and len(pipeline) == 2 and package_module(*pipeline):
            config["_class_name"] = pipeline[1]
        for name, value in list(config.items()):
            if _is_component_entry(name, value) and isinstance(value[0], str):
                module = package_module(value[0], value[1])
                if module is not None:
                    config[name] = [module, value[1]]
        return config

    def _code_files(self) -> tuple[dict[str, str], str | None]:
        """The source files to ship: {component module: file} and the pipeline's own file."""
        modules = {}
        for component in self.components.values():
            cls = type(component)
            if component is None or cls.__module__.split(".")[0] in _LIBRARIES + ("builtins",):
                continue
            try:
                modules[cls.__module__] = inspect.getsourcefile(cls)
            except TypeError:  # a class without a source file
                continue
        try:
            pipeline_file = inspect.getsourcefile(type(self))
        except TypeError:
            pipeline_file = None
        return {module: path for module, path in modules.items() if path}, pipeline_file

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        revision: str | None = None,
    ) -> str:
        r"""Upload the pipeline to the Hub repo `repo_id` (created if needed), with its code and a model card.

        The repo gets the pipeline's files, the code of its components in diffusers' remote-code layout
        (``pipeline.py``, ``unet/unet.py``, ``scheduler/scheduling_ddpm.py``) and, unless the repo already has
        one, a model card rendered from ddpm-from-scratch's template. It then loads with this package
        installed, with ``DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`` without it.

        Args:
            repo_id: ``"user/name"`` (or ``"name"`` in the token's namespace).
            commit_message: defaults to ``"Upload DDPMFromScratchPipeline"``.
            private: make a newly created repo private.
            token: a Hub token; `None` lets huggingface_hub find one (``HF_TOKEN``, then ``hf auth login``'s cache).
            create_pr: open a pull request instead of committing to the branch.
            safe_serialization, variant: as in `save_pretrained`.
            revision: the branch to commit to (created from ``main`` if needed); defaults to ``main``.

        Returns:
            The commit's url (a ``huggingface_hub.CommitInfo``, whose ``.oid`` is the commit sha).

        Raises:
            ddpm_from_scratch.hub.HubUploadError: the upload failed (with the repo id and the HTTP status).
        """
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, safe_serialization=safe_serialization, variant=variant)
            return self._push_folder(folder, repo_id, commit_message=commit_message, private=private, token=token,
                                     create_pr=create_pr, revision=revision)

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        r"""`DiffusionPipeline.save_pretrained`; with ``push_to_hub=True`` the folder is then uploaded as by
        `push_to_hub` (code files and model card included; the local folder itself is not changed). Hub
        arguments: ``repo_id`` (defaults to the folder's name), ``commit_message``, ``private``, ``token``,
        ``create_pr``, ``revision``."""
        import os

        hub_kwargs = {name: kwargs.pop(name) for name in ("commit_message", "private", "token", "create_pr",
                                                          "revision", "repo_id") if name in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(str(save_directory)))
            return self._push_folder(str(save_directory), repo_id, **hub_kwargs)

    def _push_folder(self, folder: str, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                     token: str | bool | None = None, create_pr: bool = False, revision: str | None = None) -> str:
        import importlib

        commit_message = commit_message or f"Upload {type(self).__name__}"
        module_files, pipeline_file = self._code_files()
        if _PACKAGE is not None:
            hub = importlib.import_module(f"{_PACKAGE}.hub")
            return hub.push_pipeline_folder(folder, repo_id, token=token, private=bool(private),
                                            commit_message=commit_message, revision=revision, create_pr=create_pr,
                                            module_files=module_files, pipeline_file=pipeline_file)
        return _push_folder_without_package(folder, repo_id, module_files, pipeline_file, commit_message=commit_message,
                                            private=private, token=token, create_pr=create_pr, revision=revision)


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
        self._check_inputs(batch_size, generator, output_type)
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

        step_kwargs = self._step_kwargs(generator)
        channels = sample.shape[1]
        epsilon_only = not self._scheduler_reads_variance()
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(sample, t)
            noise_pred = self.unet(model_input, t).sample
            if epsilon_only and noise_pred.shape[1] == 2 * channels:
                noise_pred = noise_pred[:, :channels]  # ε; the learned variance is DDPM's alone
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
        unet_class = importlib.import_module(f"{_PACKAGE}.unet").DDPMFromScratchUNet
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


def _push_folder_without_package(folder: str, repo_id: str, module_files: dict[str, str], pipeline_file: str | None,
                                 commit_message: str, private: bool | None, token, create_pr: bool,
                                 revision: str | None) -> str:
    """`push_to_hub` for a pipeline whose code runs from a Hub repo (ddpm-from-scratch not installed): the same
    remote-code layout, diffusers' default model card when the repo has none, no filtering (a fresh
    `save_pretrained` folder has nothing to leave out)."""
    import json
    import os
    import shutil

    from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
    from huggingface_hub import HfApi

    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as file:
        index, code = remote_code_layout(json.load(file), module_files, pipeline_file)
    with open(index_path, "w", encoding="utf-8") as file:
        json.dump(index, file, indent=2, sort_keys=True)
    for path_in_repo, source in code.items():
        shutil.copyfile(source, os.path.join(folder, *path_in_repo.split("/")))
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "README.md")):
        card = populate_model_card(load_or_create_model_card(repo_id, token=token, is_pipeline=True))
        card.save(os.path.join(folder, "README.md"))
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision,
                             create_pr=create_pr)
