"""Where a script's PIPELINE argument points, and one clear line when it points nowhere useful.

`from_pretrained` treats any string that is not an existing folder as a Hub repo id, so a mistyped
folder ends in a huggingface_hub traceback about the cache and the network. `load_pipeline` checks
the argument first and turns each way it can be wrong into a `PipelineSourceError` whose message
names the argument and what was found there; the scripts print it as a usage error (exit status 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..pipelines.pipeline_ddpm import DDPMFromScratchPipeline

MODEL_INDEX = "model_index.json"
_LISTED = 6


class PipelineSourceError(ValueError):
    """A pipeline argument that names no loadable pipeline of the expected kind; the message is one line."""


def _entries(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:_LISTED]) + (f", … ({len(names)} entries)" if len(names) > _LISTED else "")
    return f"it holds {shown}"


def pipeline_class_name(model_index: dict[str, Any]) -> str | None:
    """The pipeline class a `model_index.json` names (a remote-code repo writes ``[module, class]``)."""
    name = model_index.get("_class_name")
    if isinstance(name, list) and name:
        name = name[-1]
    return name if isinstance(name, str) else None


# The saved pipeline kinds each pipeline class loads: ours also loads diffusers' own DDPMPipeline (UNet2DModel +
# DDPMScheduler), whose samples and bound it computes as they are.
LOADABLE_KINDS = {DDPMFromScratchPipeline.__name__: (DDPMFromScratchPipeline.__name__, "DDPMPipeline")}


def check_pipeline_folder(folder: str | Path, argument: str = "PIPELINE",
                          expected: str = DDPMFromScratchPipeline.__name__) -> None:
    """Raise `PipelineSourceError` unless `folder` holds a `model_index.json` naming a pipeline that the class
    `expected` loads (`LOADABLE_KINDS`)."""
    folder = Path(folder)
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise PipelineSourceError(f"{argument} {str(folder)!r}: expected a pipeline folder, found {found} there")
    index_file = folder / MODEL_INDEX
    if not index_file.is_file():
        hint = ""
        if (folder / "config.json").is_file() and (folder.parent / MODEL_INDEX).is_file():
            hint = f"; it looks like one component of the pipeline in {str(folder.parent)!r}: pass that folder"
        elif any(folder.glob("checkpoint-*")):
            hint = "; training checkpoints are resumed with scripts/train.py --resume_from_checkpoint, not loaded"
        raise PipelineSourceError(f"{argument} {str(folder)!r} is a folder without {MODEL_INDEX}, so not a saved "
                                  f"pipeline ({_entries(folder)}){hint}")
    try:
        model_index = json.loads(index_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PipelineSourceError(f"{argument} {str(folder)!r}: {MODEL_INDEX} is not valid JSON ({error})") from None
    found = pipeline_class_name(model_index) if isinstance(model_index, dict) else None
    accepted = LOADABLE_KINDS.get(expected, (expected,))
    if found not in accepted:
        raise PipelineSourceError(f"{argument} {str(folder)!r} holds a {found or 'pipeline without _class_name'}, "
                                  f"not a {' or '.join(accepted)}")


def looks_like_a_path(source: str) -> bool:
    """Whether `source` can only have been meant as a folder, not as a Hub id."""
    # A Hub id is "name" or "owner/name"; anything else can only have been meant as a folder.
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def load_pipeline(source: str, argument: str = "PIPELINE", pipeline_class: type = DDPMFromScratchPipeline,
                  **kwargs: Any):
    """`pipeline_class.from_pretrained(source, **kwargs)`, or a one-line `PipelineSourceError` saying why not.

    `source` is a pipeline folder or a Hub repo id (downloaded, or taken from the cache when the Hub
    cannot be reached or ``HF_HUB_OFFLINE=1``). `argument` is how the message names it (``PIPELINE``,
    ``--pretrained_model_name_or_path``).
    """
    local = Path(source).expanduser()
    if local.exists() or looks_like_a_path(source):
        check_pipeline_folder(local, argument, pipeline_class.__name__)
    try:
        return pipeline_class.from_pretrained(str(local) if local.exists() else source, **kwargs)
    except LocalEntryNotFoundError:
        raise PipelineSourceError(f"{argument} {source!r}: no such folder, and no Hub repo of that name is in the "
                                  "local cache while the Hub cannot be reached (offline)") from None
    except GatedRepoError:
        raise PipelineSourceError(f"{argument} {source!r}: the Hub repo is gated; accept its terms and log in "
                                  "(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise PipelineSourceError(f"{argument} {source!r}: no such folder, and no Hub repo of that name (or it is "
                                  "private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise PipelineSourceError(f"{argument} {source!r}: the Hub repo has no revision "
                                  f"{kwargs.get('revision')!r}") from None
    except HFValidationError:
        raise PipelineSourceError(f"{argument} {source!r}: no such folder, and not a valid Hub repo id "
                                  "(owner/name)") from None
    except (OSError, ValueError) as error:
        if not local.exists():
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PipelineSourceError(f"{argument} {source!r} could not be loaded: {first_line}") from None


def exit_with_usage_error(message: str, prog: str | None = None) -> NoReturn:
    """Print ``prog: error: message`` on stderr and exit with status 2, as argparse does for bad arguments."""
    prog = prog or Path(sys.argv[0]).name
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_pipeline_or_exit(source: str, argument: str = "PIPELINE", **kwargs: Any):
    """`load_pipeline` for a command-line script: a bad source is one line on stderr and exit status 2."""
    try:
        return load_pipeline(source, argument, **kwargs)
    except PipelineSourceError as error:
        exit_with_usage_error(str(error))
