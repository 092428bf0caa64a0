"""What this package's pipelines share: the Hub mechanics (`HubPipelineMixin`) and the split of a model output
into ε and a learned variance.

A pipeline folder, saved or pushed, is self-contained: it ships its code in diffusers' layout for remote code::

    model_index.json                 {"_class_name": ["pipeline", "DDPMFromScratchPipeline"],
                                      "unet": ["unet", "DDPMFromScratchUNet"],
                                      "scheduler": ["scheduling_ddpm", "DDPMFromScratchScheduler"]}
    pipeline.py                      the pipeline class's file (ddpm_from_scratch/pipelines/pipeline_ddpm.py)
    pipeline_utils.py                this file, which pipeline.py imports
    unet/unet.py                     ddpm_from_scratch/models/unet.py
    scheduler/scheduling_ddpm.py     ddpm_from_scratch/schedulers/scheduling_ddpm.py

Each shipped file comes with the sibling files it imports (``from .unet import ...``), transitively: diffusers'
loader resolves a shipped file's relative imports in its own folder. So a folder or repo loads three ways:

1. With ddpm-from-scratch installed, ``DDPMFromScratchPipeline.from_pretrained(path)`` runs none of its code:
   :meth:`HubPipelineMixin.download` fetches no ``*.py`` and :meth:`HubPipelineMixin.load_config` maps the entries
   back to the package's modules (``["unet", "DDPMFromScratchUNet"]`` → ``ddpm_from_scratch.models.unet``).
2. With only diffusers, ``DiffusionPipeline.from_pretrained(path, trust_remote_code=True)`` imports the shipped
   files (and refuses to without ``trust_remote_code``).
3. Without custom code, ``DDPMFromScratchPipeline.to_diffusers`` gives diffusers' own ``DDPMPipeline``.

Like every shipped file, this module imports only the standard library, torch and diffusers at module level; the
package's own helpers (``ddpm_from_scratch.hub``) are imported by name at call time, and only when it runs as
part of the package.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil

import torch
from diffusers import DDPMScheduler, SchedulerMixin

# Variance types whose σ_t² the network outputs in extra channels (ε first, then the variance output): a copy of
# schedulers.scheduling_ddpm.LEARNED_VARIANCE_TYPES, which does not ship beside this file (tests/test_copies.py).
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")

# The package this module belongs to ("ddpm_from_scratch"), or None when it runs as a shipped copy
# (``pipeline_utils.py`` of a Hub repo or folder loaded with trust_remote_code: ``diffusers_modules.local…``).
_PACKAGE = __name__.partition(".")[0] if __name__.startswith("ddpm_from_scratch.") else None

# The pipeline's own file in a shipped folder: ``pipeline.py``, named in model_index.json as ``["pipeline", class]``.
PIPELINE_CODE_STEM = "pipeline"
# Libraries whose classes diffusers imports itself: no code to ship for them.
_LIBRARIES = ("diffusers", "transformers", "onnxruntime")


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
    # run as shipped code, where ddpm_from_scratch cannot be imported.
    reads = isinstance(scheduler, DDPMScheduler) or hasattr(scheduler, "split_model_output")
    return reads and scheduler.config.get("variance_type") in LEARNED_VARIANCE_TYPES


# ---------------------------------------------------------------------------------------- one call's inputs


def check_pipeline_inputs(batch_size: int, generator, output_type: str, output_types: tuple[str, ...],
                          one_generator: bool = False) -> None:
    """Refuse a pipeline call's bad arguments before anything is drawn, naming the argument and the value.

    ``generator`` may be a list of ``batch_size`` generators (one per image, as diffusers' pipelines take
    them), unless ``one_generator``: the toy pipelines draw the whole batch from one.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if one_generator:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError("`generator` must be one torch.Generator (it draws the whole batch).")
    elif isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(
            f"`generator` is a list of {len(generator)} generators but `batch_size` is {batch_size}: "
            "pass one generator per image."
        )
    if output_type not in output_types:
        raise ValueError(f"`output_type` must be one of {output_types}, got {output_type!r}.")


def step_kwargs(scheduler, generator) -> dict:
    """The keyword arguments of ``scheduler.step`` beyond (output, t, sample): the generator, where it takes one
    (deterministic multistep solvers such as UniPC take none)."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def output_for_scheduler(model_output, channels: int, reads_variance: bool):
    """What the scheduler's `step` reads of the network's output: all of it when it reads a learned variance
    (`scheduler_reads_variance`), else the first ``channels`` (ε) of a 2C-channel output, whose variance half
    only DDPM's step knows how to use. A view: no copy, the same bits."""
    if not reads_variance and model_output.shape[1] == 2 * channels:
        return model_output[:, :channels]
    return model_output


# ---------------------------------------------------------------------------------------- what ships


def _is_component_entry(key: str, value) -> bool:
    return not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2


def relative_imports(source_file: str) -> list[str]:
    """The sibling modules `source_file` imports (``from .scheduling_ddpm import ...``), as diffusers' remote-code
    loader reads them: it looks for ``<module>.py`` beside the file."""
    with open(source_file, encoding="utf-8") as file:
        text = file.read()
    return sorted(set(re.findall(r"^\s*from \.(\w+) import", text, flags=re.MULTILINE)))


def import_closure(source_file: str) -> dict[str, str]:
    """`source_file` and every sibling file it imports, directly or through another: {stem: file}.

    Shipped files may only import siblings (``from .x import``) of their own folder; a relative import that
    climbs (``from ..x``) cannot be shipped and is refused naming the file.
    """
    with open(source_file, encoding="utf-8") as file:
        if re.search(r"^\s*from \.\.", file.read(), flags=re.MULTILINE):
            raise ValueError(f"{source_file} imports from a parent package (`from ..`): it cannot be shipped")
    folder = os.path.dirname(source_file)
    closure = {os.path.splitext(os.path.basename(source_file))[0]: source_file}
    pending = [source_file]
    while pending:
        for stem in relative_imports(pending.pop()):
            if stem not in closure:
                closure[stem] = os.path.join(folder, f"{stem}.py")
                pending.append(closure[stem])
    return closure


def remote_code_layout(
    model_index: dict, module_files: dict[str, str], pipeline_file: str | None = None
) -> tuple[dict, dict[str, str]]:
    r"""Point a pipeline's `model_index` at code shipped beside it (diffusers' remote-code layout).

    Args:
        model_index: the contents of ``model_index.json``.
        module_files: module name as model_index.json names a component's library (e.g.
            ``"ddpm_from_scratch.unet"``) -> the file with its source.
        pipeline_file: the source of the pipeline class, shipped as ``pipeline.py``; `None` to leave
            ``_class_name`` (and any ``pipeline.py``) alone.

    Returns:
        The new model_index and ``{path in the folder: source file}``: ``_class_name`` becomes
        ``["pipeline", name]`` with the pipeline's code in ``pipeline.py`` (and the files it imports beside it),
        and a component ``name: [module, class]`` with a known module becomes ``name: [stem, class]`` with the
        module's code in ``name/stem.py`` (and the files it imports in ``name/``). Other entries are kept.
    """
    index = dict(model_index)
    files: dict[str, str] = {}
    pipeline = index.get("_class_name")
    if isinstance(pipeline, (list, tuple)) and len(pipeline) == 2:
        pipeline = pipeline[1]
    if pipeline_file is not None and isinstance(pipeline, str):
        index["_class_name"] = [PIPELINE_CODE_STEM, pipeline]
        for stem, source in import_closure(pipeline_file).items():
            files[f"{PIPELINE_CODE_STEM if source == pipeline_file else stem}.py"] = source
    for name, value in model_index.items():
        if _is_component_entry(name, value) and value[0] in module_files:
            closure = import_closure(module_files[value[0]])
            index[name] = [next(iter(closure)), value[1]]
            files.update({f"{name}/{stem}.py": source for stem, source in closure.items()})
    return index, files


def write_remote_code_layout(folder: str, module_files: dict[str, str], pipeline_file: str | None) -> None:
    """Rewrite the saved pipeline in `folder` into the remote-code layout: model_index.json and the code files."""
    index_path = os.path.join(folder, "model_index.json")
    with open(index_path, encoding="utf-8") as file:
        index, code = remote_code_layout(json.load(file), module_files, pipeline_file)
    for path_in_folder, source in code.items():
        target = os.path.join(folder, *path_in_folder.split("/"))
        if os.path.abspath(source) != os.path.abspath(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
    with open(index_path, "w", encoding="utf-8") as file:
        json.dump(index, file, indent=2, sort_keys=True)
        file.write("\n")


def package_module(library: str, class_name: str) -> str | None:
    """The package module that defines `class_name`, for a model_index.json entry ``[library, class_name]`` that
    names a shipped file (``"unet"``, ``"pipeline"``) or a shipped copy (``"diffusers_modules.local.unet"``);
    None for diffusers' own classes, entries already naming the package, other classes, or when this file runs
    without the package.

    Computed from the classes the package exports: an entry resolves to exported class `class_name` when its
    stem is that class's module stem or ``pipeline``.
    """
    if _PACKAGE is None or not isinstance(library, str):
        return None
    if library.split(".")[0] in _LIBRARIES or library.startswith(f"{_PACKAGE}."):
        return None
    cls = getattr(importlib.import_module(_PACKAGE), class_name, None)
    if not isinstance(cls, type):
        return None
    stem = library.rpartition(".")[2]
    return cls.__module__ if stem in (PIPELINE_CODE_STEM, cls.__module__.rpartition(".")[2]) else None


def _shipped_source(cls: type) -> str | None:
    """The file that ships for `cls`: its source, for this package's classes and their shipped copies."""
    if not cls.__module__.startswith(("ddpm_from_scratch.", "diffusers_modules.")):
        return None
    try:
        return inspect.getsourcefile(cls)
    except TypeError:  # a class without a source file
        return None


# ------------------------------------------------------------------------------------------- the mixin


class HubPipelineMixin:
    r"""The Hub mechanics of this package's pipelines: save, download, push, and load with or without the package.

    Put it before `DiffusionPipeline` in a pipeline's bases (``class P(HubPipelineMixin, DiffusionPipeline)``).
    `save_pretrained` and `push_to_hub` write the same self-contained layout (see this module's docstring); with
    ddpm-from-scratch installed, `from_pretrained` maps its entries back to the package's modules and runs no
    code from the folder or repo.
    """

    def with_components(self, **components):
        r"""A pipeline of this class with this one's components and settings, the components named replaced:
        ``pipe.with_components(scheduler=analytic)``.

        The settings are the pipeline's own config entries (``id2label``, ``log_snr_prefix_steps``), so a swapped
        scheduler keeps them; `self` is left as it is. Unlike diffusers' ``from_pipe``, the components keep their
        dtype and device, and a subclass of the annotated type (our U-Net for ``ModelMixin``) is kept too.
        """
        unknown = sorted(set(components) - set(self.components))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no component {unknown[0]!r}; its components are "
                             f"{sorted(self.components)}")
        settings = {key: value for key, value in self.config.items()
                    if not key.startswith("_") and key not in self.components}
        return type(self)(**{**self.components, **components}, **settings)

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

        When this file runs as shipped code, or with ``custom_pipeline``, it is diffusers' `download`.
        """
        if _PACKAGE is None or kwargs.get("custom_pipeline") is not None:
            return super().download(pretrained_model_name, **kwargs)
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
        r"""`ConfigMixin.load_config`, with the shipped-code entries mapped to the installed package.

        A saved folder or pushed repo names the code it ships (``"unet": ["unet", "DDPMFromScratchUNet"]``,
        ``"_class_name": ["pipeline", ...]``); with the package installed these become
        ``["ddpm_from_scratch.models.unet", "DDPMFromScratchUNet"]`` and a plain class name (see `package_module`), so
        `from_pretrained` imports the package instead of running the folder's files.
        """
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        if isinstance(loaded, tuple):
            return (cls._package_entries(loaded[0]), *loaded[1:])
        return cls._package_entries(loaded)

    @staticmethod
    def _package_entries(config: dict) -> dict:
        config = dict(config)
        pipeline = config.get("_class_name")
        if isinstance(pipeline, (list, tuple)) and len(pipeline) == 2 and package_module(*pipeline):
            config["_class_name"] = pipeline[1]
        for name, value in list(config.items()):
            if _is_component_entry(name, value):
                module = package_module(*value)
                if module is not None:
                    config[name] = [module, value[1]]
        return config

    def _code_files(self) -> tuple[dict[str, str], str | None]:
        """The source files to ship: {component module: file} and the pipeline's own file (or None).

        Only this package's classes ship, or copies of them running as shipped code (``diffusers_modules…``):
        a class of another installed library stays named by its module path, which diffusers imports.
        """
        modules = {}
        for component in self.components.values():
            source = _shipped_source(type(component)) if component is not None else None
            if source:
                modules[type(component).__module__] = source
        return modules, _shipped_source(type(self))

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        r"""`DiffusionPipeline.save_pretrained`, self-contained: the folder also gets the pipeline's and its
        components' code in diffusers' remote-code layout, exactly as `push_to_hub` uploads it, so it loads with
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` where ddpm-from-scratch is not
        installed (and with the package's classes where it is).

        With ``push_to_hub=True`` the folder is then uploaded as by `push_to_hub` (model card included). Hub
        arguments: ``repo_id`` (defaults to the folder's name), ``commit_message``, ``private``, ``token``,
        ``create_pr``, ``revision``."""
        hub_kwargs = {name: kwargs.pop(name) for name in ("commit_message", "private", "token", "create_pr",
                                                          "revision", "repo_id") if name in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code_layout(str(save_directory), *self._code_files())
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(str(save_directory)))
            return self._push_folder(str(save_directory), repo_id, **hub_kwargs)

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

        The repo gets what `save_pretrained` writes (the code of the pipeline and its components included) and,
        unless the repo already has one, a model card rendered from ddpm-from-scratch's template. It then loads
        with this package installed, and with ``DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)``
        without it.

        Args:
            repo_id: ``"user/name"`` (or ``"name"`` in the token's namespace).
            commit_message: defaults to ``"Upload <pipeline class>"``.
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

    def _push_folder(self, folder: str, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                     token: str | bool | None = None, create_pr: bool = False, revision: str | None = None) -> str:
        commit_message = commit_message or f"Upload {type(self).__name__}"
        if _PACKAGE is not None:
            hub = importlib.import_module(f"{_PACKAGE}.hub")
            return hub.push_pipeline_folder(folder, repo_id, token=token, private=bool(private),
                                            commit_message=commit_message, revision=revision, create_pr=create_pr)
        return _push_folder_without_package(folder, repo_id, commit_message=commit_message, private=private,
                                            token=token, create_pr=create_pr, revision=revision)


def _push_folder_without_package(folder: str, repo_id: str, commit_message: str, private: bool | None, token,
                                 create_pr: bool, revision: str | None) -> str:
    """`push_to_hub` for a pipeline whose code runs shipped (ddpm-from-scratch not installed): the folder as
    `save_pretrained` wrote it, with diffusers' default model card when the repo has none."""
    from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    if not os.path.exists(os.path.join(folder, "README.md")):
        card = populate_model_card(load_or_create_model_card(repo_id, token=token, is_pipeline=True))
        card.save(os.path.join(folder, "README.md"))
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision,
                             create_pr=create_pr)
