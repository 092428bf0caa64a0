"""Crash-safe, verified training checkpoints.

Checkpoints are folders ``checkpoint-N`` (N = optimiser steps taken) under the output
folder. Each is written as ``.checkpoint-N.tmp`` and renamed into place only when
complete, so a process killed at any instant leaves every ``checkpoint-N`` loadable.
The last file written inside is ``manifest.json``, every other file's size and SHA-256 (as orbax and
torch.distributed.checkpoint commit a checkpoint by its metadata): a resume checks it first, so a truncated copy
or a flipped bit is found before anything loads. ``latest`` resumes from the newest checkpoint that verifies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINING_STATE_NAME = "training_state.json"
EMA_FOLDER = "unet_ema"
MANIFEST_NAME = "manifest.json"
NO_MANIFEST = "no manifest"


class CheckpointError(FileNotFoundError):
    """A checkpoint named to resume from is missing, incomplete or damaged (the message names it and the file)."""


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """``folder/manifest.json``: the size and SHA-256 of every other file in `folder`, by relative path."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = folder / MANIFEST_NAME
    manifest.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=1))
    return manifest


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with the checkpoint `folder` by its manifest (a missing file, a size, a hash), or None if every
    file verifies. A checkpoint written before manifests existed has none: `NO_MANIFEST`."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return NO_MANIFEST
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MANIFEST_NAME} cannot be read"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{name} has {size} bytes, its manifest says {expected['size']}"
        if file_sha256(path) != expected["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest"
    return None



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
    """The checkpoint folder that ``--resume_from_checkpoint`` names, verified: ``latest``, a path, a bare
    ``checkpoint-N`` inside `output_dir` (as diffusers' examples take it), or None.

    ``latest`` with no checkpoint yet starts from scratch, so the same command both starts and resumes a run; it
    takes the newest checkpoint that verifies, naming each damaged one it skips in a warning. A named checkpoint
    that is not complete or does not verify is refused (`CheckpointError`, naming it and the file). A checkpoint
    without a manifest (written before manifests) resumes, with a notice.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        for _, path in reversed(list_checkpoints(output_dir)):
            problem = checkpoint_problem(path)
            if problem is None or problem == NO_MANIFEST:
                _notice_unverified(path, problem)
                return path
            logger.warning("Skipping %s: %s", path, problem)
        return None
    path = Path(resume_from_checkpoint)
    if not path.exists() and CHECKPOINT_PATTERN.match(resume_from_checkpoint):
        path = Path(output_dir) / resume_from_checkpoint
    if not (path / TRAINING_STATE_NAME).is_file():
        raise CheckpointError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint folder "
            f"(no {TRAINING_STATE_NAME} in it)."
        )
    problem = checkpoint_problem(path)
    if problem is not None and problem != NO_MANIFEST:
        raise CheckpointError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is damaged: {problem}.")
    _notice_unverified(path, problem)
    return path


def _notice_unverified(path: Path, problem: str | None) -> None:
    if problem == NO_MANIFEST:
        logger.warning("%s has no %s (written before checkpoints were verified): resuming from it unverified",
                       path, MANIFEST_NAME)


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
        write_manifest(tmp)  # last: it vouches for every file written before it
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb+") as f:
                    os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit, final)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(output_dir: Path, total_limit: int, written: Path) -> None:
    """Keep the `total_limit` newest checkpoints, and always the newest one that verifies: `written` (just written,
    so verified), or a newer one that does. A damaged newer checkpoint (a resume fell back past it) never pushes the
    last good one out."""
    checkpoints = [path for _, path in list_checkpoints(output_dir)]
    newest_good = written
    for path in reversed(checkpoints[checkpoints.index(written) + 1:] if written in checkpoints else []):
        if checkpoint_problem(path) in (None, NO_MANIFEST):
            newest_good = path
            break
    for old in checkpoints[:-total_limit]:
        if old != newest_good:
            shutil.rmtree(old)


def remove_stale_temporaries(output_dir: str | os.PathLike) -> None:
    """Delete ``.checkpoint-N.tmp`` folders a killed run left behind."""
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for path in output_dir.glob(".checkpoint-*.tmp"):
            shutil.rmtree(path, ignore_errors=True)
