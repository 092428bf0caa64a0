"""Uploads to the Hugging Face Hub: what a pipeline repo holds and how a folder becomes one.

What a pipeline repo on the Hub holds (``push_pipeline_folder``, ``DDPMFromScratchPipeline.push_to_hub``)::

    README.md                        the model card (the folder's, else one rendered from model_card.md)
    model_index.json                 {"_class_name": ["pipeline", "DDPMFromScratchPipeline"],
                                      "unet": ["unet", "DDPMFromScratchUNet"],
                                      "scheduler": ["scheduling_ddpm", "DDPMFromScratchScheduler"]}
    pipeline.py                      = ddpm_from_scratch/pipelines/pipeline_ddpm.py
    pipeline_utils.py                = ddpm_from_scratch/pipelines/pipeline_utils.py (imported by pipeline.py)
    unet/unet.py                     = ddpm_from_scratch/models/unet.py
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    scheduler/scheduling_ddpm.py     = ddpm_from_scratch/schedulers/scheduling_ddpm.py
    scheduler/scheduler_config.json
    samples/*.png                    the sample grids, when the folder has them

This is diffusers' layout for code shipped in a repo: a component ``name: [stem, class]`` whose file
``name/stem.py`` exists is imported from that file, and a ``_class_name`` of ``[stem, class]`` with a
``stem.py`` at the root is the pipeline's class (``trust_remote_code=True`` is required for both). Each
code file ships with the sibling files it imports (``pipeline_utils.py``; ``scheduling_ddpm.py`` beside
``scheduling_analytic_dpm.py``; ``unet.py`` beside ``toy_models.py``), and they import only torch, numpy and
diffusers otherwise, so the repo loads

1. with this package installed: ``DDPMFromScratchPipeline.from_pretrained(repo_id)``, which maps the
   entries back to ``ddpm_from_scratch.*`` modules and runs none of the repo's code;
2. with diffusers only: ``DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)``;
3. and ``DDPMFromScratchPipeline.to_diffusers()`` / ``scripts/export_diffusers.py`` make a separate repo
   with diffusers' own ``DDPMPipeline``, which needs no custom code at all.

A folder written by ``save_pretrained`` already has this layout and is uploaded as it is; a folder saved by
an earlier version of the package (model_index.json naming ``ddpm_from_scratch.unet``, no code) gets the
layout in the upload only. The local folder is never changed. Training state is never uploaded: ``checkpoint-*/`` and ``.checkpoint-*.tmp/`` folders,
``logs/`` (TensorBoard), optimizer and random states (see ``NOT_UPLOADED_FOLDERS``/``NOT_UPLOADED_FILES``).

The Hub token is whatever huggingface_hub finds (the ``token`` argument, then ``HF_TOKEN``, then the
``hf auth login`` cache); it is only sent in request headers, never written or logged.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Mapping

from .model_card import minimal_model_card


# Folders (at any depth) and files (by name, at any depth) that never go to the Hub.
NOT_UPLOADED_FOLDERS = ("checkpoint-*", ".checkpoint-*", "logs", "runs", "wandb", ".git", "__pycache__",
                        ".ipynb_checkpoints", ".cache")
NOT_UPLOADED_FILES = ("optimizer*", "random_states*", "scaler*.pt", "*.pkl", "*.ckpt", "*.tmp",
                      "events.out.tfevents.*", ".DS_Store")
# Files that are training state only at the top of the folder (accelerate's learning-rate scheduler).
NOT_UPLOADED_TOP_LEVEL_FILES = ("scheduler*.bin", "scheduler*.pt", "lr_scheduler*")


class HubUploadError(RuntimeError):
    """An upload to the Hub failed; nothing local was changed. ``status`` is the HTTP status, if there was one."""

    def __init__(self, message: str, repo_id: str, status: int | None = None):
        super().__init__(message)
        self.repo_id, self.status = repo_id, status


def _package_code(folder: Path, index: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """The package's code for the entries of `index` that need it: {library as named in model_index.json:
    source file} and the pipeline's source file (or None).

    An entry needs it when its class is one of the package's (named ``ddpm_from_scratch.unet``, or by a copy
    such as ``diffusers_modules.local.unet`` or ``unet``) and the folder does not already ship its file.
    """
    import importlib

    from ..pipelines.pipeline_utils import _PACKAGE, PIPELINE_CODE_STEM, _is_component_entry, package_module

    def source(library: str, class_name: str) -> str | None:
        module_name = library if library.startswith(f"{_PACKAGE}.") else package_module(library, class_name)
        module = importlib.import_module(module_name) if module_name else None
        return module.__file__ if module is not None and hasattr(module, class_name) else None

    modules: dict[str, str] = {}
    for name, value in index.items():
        if not _is_component_entry(name, value):
            continue
        library, class_name = value
        if not isinstance(library, str) or (folder / name / f"{library.rpartition('.')[2]}.py").is_file():
            continue
        found = source(library, class_name)
        if found is not None:
            modules[library] = found
    pipeline = index.get("_class_name")
    library, pipeline_name = pipeline if isinstance(pipeline, (list, tuple)) and len(pipeline) == 2 \
        else (PIPELINE_CODE_STEM, pipeline)
    if not isinstance(pipeline_name, str) or (folder / f"{PIPELINE_CODE_STEM}.py").is_file():
        return modules, None
    return modules, source(library, pipeline_name)


def _uploaded(relative: Path) -> bool:
    *folders, name = relative.parts
    if any(fnmatch.fnmatch(folder, pattern) for folder in folders for pattern in NOT_UPLOADED_FOLDERS):
        return False
    if any(fnmatch.fnmatch(name, pattern) for pattern in NOT_UPLOADED_FILES):
        return False
    return not (not folders and any(fnmatch.fnmatch(name, pattern) for pattern in NOT_UPLOADED_TOP_LEVEL_FILES))


def hub_upload_files(
    folder: str | Path, module_files: Mapping[str, str] | None = None, pipeline_file: str | None = None
) -> dict[str, Path | bytes]:
    """What `push_pipeline_folder` uploads from `folder`: {path in the repo: local file, or bytes}.

    The folder's files minus training state, ``model_index.json`` pointed at the code files, and the code
    files. `module_files` ({library as model_index.json names it: source file}) and `pipeline_file` default
    to this package's modules, for the components and the pipeline whose classes are the package's, unless
    the folder already ships their code (as every folder `save_pretrained` writes does). Components of
    diffusers itself (an exported ``DDPMPipeline``, a swapped-in ``DDIMScheduler``) need no code and get none.
    """
    from ..pipelines.pipeline_utils import remote_code_layout

    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{folder} is not a saved pipeline: it has no model_index.json.")
    files: dict[str, Path | bytes] = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink() and _uploaded(path.relative_to(folder))
    }
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if module_files is None:
        module_files, package_pipeline = _package_code(folder, index)
        pipeline_file = pipeline_file or package_pipeline
    index, code = remote_code_layout(index, dict(module_files), pipeline_file)
    files["model_index.json"] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    files.update({path: Path(source) for path, source in code.items()})
    return files


def _is_network_error(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")


def push_pipeline_folder(
    folder: str | Path,
    repo_id: str,
    token: str | bool | None = None,
    private: bool = False,
    commit_message: str = "Upload DDPM pipeline (ddpm-from-scratch)",
    revision: str | None = None,
    create_pr: bool = False,
    module_files: Mapping[str, str] | None = None,
    pipeline_file: str | None = None,
) -> str:
    """Create the Hub repo `repo_id` if needed and upload the pipeline saved in `folder`, in one commit.

    Uploaded: the folder's files except training state (checkpoints, ``logs/``, optimizer and random
    states), the sample grids in ``samples/``, the component code and ``model_index.json`` pointing at it
    (see this module's docstring), and the model card: the folder's ``README.md``, else the repo's existing
    one is kept, else a minimal card is rendered from ``model_card.md`` (`minimal_model_card`).

    Args:
        folder: a pipeline saved with `save_pretrained` (a training run's ``--output_dir``).
        repo_id: ``"user/name"``, or ``"name"`` in the token's own namespace.
        token: a Hub token; `None` lets huggingface_hub find one (``HF_TOKEN``, then the login cache).
        private: create the repo private (an existing repo keeps its visibility).
        commit_message: the commit's title.
        revision: the branch to commit to, created from ``main`` if it does not exist; `None` is ``main``.
        create_pr: open a pull request instead of committing to the branch.
        module_files, pipeline_file: the code to ship (see `hub_upload_files`); default: this package's.

    Returns:
        The commit's url (a ``huggingface_hub.CommitInfo``, a `str` whose ``.oid`` is the commit sha).

    Raises:
        ValueError: `folder` has no ``model_index.json``.
        HubUploadError: the Hub refused or failed (naming the repo id and the HTTP status). `folder` is
            never modified, whether the upload succeeds or not.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    files = hub_upload_files(folder, module_files=module_files, pipeline_file=pipeline_file)
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        if "README.md" not in files and not api.file_exists(repo_id, "README.md", revision=revision):
            files["README.md"] = minimal_model_card(folder, repo_id).encode()
        operations = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(data) if isinstance(data, Path) else data)
            for path, data in sorted(files.items())
        ]
        return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision,
                                 create_pr=create_pr)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        detail = error.server_message or str(error).splitlines()[0]
        raise HubUploadError(
            f"Uploading {folder} to the Hub repo {repo_id!r} failed: HTTP {status} ({detail.strip()}). "
            f"Nothing was changed locally.", repo_id=repo_id, status=status) from error
    except Exception as error:
        if not _is_network_error(error):
            raise
        raise HubUploadError(
            f"Uploading {folder} to the Hub repo {repo_id!r} failed: could not reach the Hub "
            f"({type(error).__name__}: {error}). Nothing was changed locally.", repo_id=repo_id) from error
