"""Crash-safe training checkpoints.

Checkpoints are folders ``checkpoint-N`` (N = optimiser steps taken) under the output
folder. Each is written as ``.checkpoint-N.tmp`` and renamed into place only when
complete, so a process killed at any instant leaves every ``checkpoint-N`` loadable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_NAME = "training_state.json"
EMA_FOLDER = "unet_ema"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints under `output_dir`, as (step, path), oldest first.

    Half-written ``.checkpoint-N.tmp`` folders never match, so they are never resumed from.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / TRAINING_STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """The checkpoint folder that ``--resume_from_checkpoint`` names: ``latest``, a path, or None.

    ``latest`` with no checkpoint yet starts from scratch, so the same command both
    starts and resumes a run; an explicit path that is not a complete checkpoint is an error.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not (path / TRAINING_STATE_NAME).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint folder "
            f"(no {TRAINING_STATE_NAME} in it)."
        )
    return path


def read_training_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / TRAINING_STATE_NAME).read_text())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, global_step: int, ema_model=None,
                    total_limit: int | None = None, extra_state: dict | None = None) -> Path:
    """Write ``checkpoint-{global_step}`` atomically; keep at most `total_limit` checkpoints.

    Every process writes its share (accelerate saves one RNG file per rank) into
    the temporary folder; the main process then records the training state, syncs
    and renames; `extra_state` (JSON, e.g. the LR schedule's state) goes into
    ``training_state.json`` beside the step. The rename is the commit point: before it the checkpoint does not
    exist, after it it is complete.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{global_step}"
    tmp = output_dir / f".checkpoint-{global_step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()

    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if ema_model is not None:
            ema_model.save_pretrained(str(tmp / EMA_FOLDER))
        (tmp / TRAINING_STATE_NAME).write_text(json.dumps({"global_step": global_step, **(extra_state or {})}))
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb+") as f:
                    os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """Delete ``.checkpoint-N.tmp`` folders a killed run left behind."""
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for path in output_dir.glob(".checkpoint-*.tmp"):
            shutil.rmtree(path, ignore_errors=True)
