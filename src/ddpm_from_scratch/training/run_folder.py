"""One run, one folder: a lock held for the run's life, and no fresh run into a folder another run has written.

A run holds ``<output_dir>/.run.lock`` (JSON: host, PID, start time), created atomically (a hard link of the full
record, which fails if the lock exists), from start to exit. A second run into the same folder is refused at once, naming the holder. A lock whose process is gone
(same host, PID not running) or that cannot be read is stale: taken over with a warning. A run without
``--resume_from_checkpoint`` into a folder that holds checkpoints or a saved pipeline is refused; with
``--overwrite_output_dir`` the old run's outputs are removed first, and listed. (transformers' ``Trainer`` refuses a
used output folder the same way.)
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from .checkpoints import CHECKPOINT_PATTERN

logger = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
# What a run writes into its folder (scripts/train.py): removed by --overwrite_output_dir, and, but for the logs and
# grids, what makes a folder "used".
RUN_FILES = ("model_index.json", "README.md", "evaluation.json", "evaluation_samples.png")
RUN_FOLDERS = ("unet", "scheduler", "samples", "logs")


class RunFolderError(RuntimeError):
    """The output folder cannot be used as asked: held by another run, or holding another run's outputs."""


def _pid_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class RunLock:
    """The lock on a run folder (see the module). ``acquire`` raises `RunFolderError` if a live run holds it;
    ``release`` (also at interpreter exit) removes it if it is still this process's."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_NAME
        self.held = False
        self.created_folder = False

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    def _holder(self) -> dict | None:
        """The lock's record, or None if it cannot be read as one (a stale lock)."""
        try:
            record = json.loads(self.path.read_text())
            if isinstance(record, dict) and isinstance(record.get("pid"), int) and isinstance(record.get("host"), str):
                return record
        except (OSError, ValueError):
            pass
        return None

    def acquire(self) -> "RunLock":
        # A run refused before it writes anything must leave no folder behind: remember whether we made it.
        self.created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written in full under a private name, then linked into place: link() fails if the lock exists, so the
        # lock appears atomically *with* its record (a reader never sees an empty lock and takes it for stale).
        draft = self.path.with_name(f"{LOCK_NAME}.{socket.gethostname()}.{os.getpid()}")
        draft.write_text(json.dumps(self._record()))
        try:
            for _ in range(3):  # a stale lock removed under us by another starting run: try again
                try:
                    os.link(draft, self.path)
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                atexit.register(self.release)
                return self
        finally:
            draft.unlink(missing_ok=True)
        raise RunFolderError(f"--output_dir {self.path.parent}: could not take its lock {self.path}")

    def _take_over_if_stale(self) -> None:
        holder = self._holder()
        if holder is None:
            logger.warning("--output_dir %s: its lock %s cannot be read; treating it as stale and taking it over",
                           self.path.parent, self.path)
        elif holder["host"] == socket.gethostname() and not _pid_is_running(holder["pid"]):
            logger.warning("--output_dir %s: taking over the lock of a run that is gone (PID %d, started %s)",
                           self.path.parent, holder["pid"], holder.get("started", "?"))
        else:
            raise RunFolderError(
                f"--output_dir {self.path.parent} is in use by another run (host {holder['host']}, PID "
                f"{holder['pid']}, started {holder.get('started', '?')}); wait for it to finish or choose another "
                f"--output_dir (a run that is gone leaves a stale {LOCK_NAME}, taken over on this host)")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
            self.path.unlink(missing_ok=True)
        if getattr(self, "created_folder", False) and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


def previous_run_outputs(output_dir: str | os.PathLike) -> list[Path]:
    """What another run left in `output_dir`: checkpoints (complete or half-written), a saved pipeline, its card,
    evaluation, grids, logs and shipped code."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    pipeline_saved = (output_dir / "model_index.json").is_file()
    for path in sorted(output_dir.iterdir()):
        name = path.name
        if CHECKPOINT_PATTERN.match(name) or (name.startswith(".checkpoint-") and name.endswith(".tmp")):
            found.append(path)
        elif name in RUN_FILES or (name in RUN_FOLDERS and path.is_dir()):
            found.append(path)
        elif pipeline_saved and path.suffix == ".py" and path.is_file():  # the pipeline's shipped code
            found.append(path)
    return found


def check_fresh_run(output_dir: str | os.PathLike, resume_from_checkpoint: str | None,
                    overwrite_output_dir: bool) -> list[Path]:
    """Refuse a fresh run into a used folder, or clear it with ``overwrite_output_dir``; returns what was removed.

    Raises:
        RunFolderError: ``overwrite_output_dir`` with ``resume_from_checkpoint`` (contradictory), or a used folder
            without either flag.
    """
    if overwrite_output_dir and resume_from_checkpoint is not None:
        raise RunFolderError("--overwrite_output_dir and --resume_from_checkpoint contradict each other: one clears "
                             "the folder, the other resumes from it; give one")
    if resume_from_checkpoint is not None:
        return []
    used = previous_run_outputs(output_dir)
    if not used:
        return []
    if not overwrite_output_dir:
        has_checkpoints = any(CHECKPOINT_PATTERN.match(p.name) for p in used)
        what = "checkpoints" if has_checkpoints else "a saved pipeline"
        raise RunFolderError(
            f"--output_dir {output_dir} already holds another run's {what} ({', '.join(p.name for p in used[:4])}"
            f"{', …' if len(used) > 4 else ''}): pass --resume_from_checkpoint latest to continue it, or "
            "--overwrite_output_dir to remove it and start afresh")
    for path in used:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    logger.warning("--overwrite_output_dir: removed %s from %s", ", ".join(p.name for p in used), output_dir)
    return used
