"""One run, one folder (issue 21): the run lock, no silent mixing of runs, verified checkpoints and the fallback
past a damaged one. The end-to-end tests do the damage to real checkpoints of tiny `scripts/train.py` runs."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from ddpm_from_scratch.training.checkpoints import (
    CheckpointError,
    checkpoint_problem,
    prune_checkpoints,
    write_manifest,
)
from ddpm_from_scratch.training.run_folder import LOCK_NAME, RunFolderError, RunLock, check_fresh_run
from test_train import launch, reports, run_main, tiny_config, train_args, unet_weights  # noqa: F401 (fixture)

STEPS = ["--max_train_steps", 8, "--checkpointing_steps", 3, "--save_images_steps", 1000, "--no_evaluate"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undamaged run: checkpoints 3, 6 and 8, its final raw and EMA weights."""
    root = tmp_path_factory.mktemp("reference")
    config = root / "tiny_unet.json"
    from test_train import TINY_UNET

    config.write_text(json.dumps(TINY_UNET))
    launch(train_args(root / "run", config, *STEPS), report_dir=root / "reports")
    return {"folder": root / "run", "config": config, "raw": reports(root / "reports")[0]["weights_sha256"],
            "ema": unet_weights(root / "run")}


def damaged_copy(reference, tmp_path, damage) -> "Path":  # noqa: F821
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(reference["folder"] / name, folder / name)
    damage(folder / "checkpoint-6")
    return folder


def truncate(checkpoint):
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(checkpoint):
    path = checkpoint / "optimizer.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def resume(reference, folder, tmp_path, *extra, check=True):
    return launch(train_args(folder, reference["config"], *STEPS, "--resume_from_checkpoint", *extra),
                  report_dir=tmp_path / "reports", check=check)


# ---------------------------------------------------------------------------------------------------- manifests


def test_every_checkpoint_carries_a_manifest_that_verifies(reference):
    for name in ("checkpoint-3", "checkpoint-6", "checkpoint-8"):
        manifest = json.loads((reference["folder"] / name / "manifest.json").read_text())
        assert {"model.safetensors", "optimizer.bin", "training_state.json"} <= set(manifest["files"])
        assert checkpoint_problem(reference["folder"] / name) is None


@pytest.mark.parametrize("damage, skipped", [
    (truncate, "model.safetensors has"), (flip_a_bit, "optimizer.bin does not match its SHA-256"),
])
def test_latest_falls_back_past_a_damaged_checkpoint_and_ends_as_an_undamaged_run(reference, tmp_path, damage,
                                                                                  skipped):
    folder = damaged_copy(reference, tmp_path, damage)
    result = resume(reference, folder, tmp_path, "latest")
    assert "Skipping" in result.stderr and "checkpoint-6" in result.stderr and skipped in result.stderr
    assert "Resumed from" in result.stderr and "checkpoint-3 at step 3" in result.stderr
    assert reports(tmp_path / "reports")[0]["weights_sha256"] == reference["raw"]
    got = unet_weights(folder)
    assert all(torch.equal(reference["ema"][k], got[k]) for k in got)


def test_a_named_damaged_checkpoint_is_refused_naming_it_and_the_file(reference, tmp_path):
    folder = damaged_copy(reference, tmp_path, truncate)
    with pytest.raises(CheckpointError, match=r"'checkpoint-6' is damaged: model.safetensors has \d+ bytes"):
        run_main("--output_dir", folder, "--model_config", reference["config"], "--resume_from_checkpoint",
                 "checkpoint-6")


def test_a_checkpoint_without_a_manifest_still_resumes_with_a_notice(reference, tmp_path):
    folder = damaged_copy(reference, tmp_path, lambda checkpoint: (checkpoint / "manifest.json").unlink())
    result = resume(reference, folder, tmp_path, "checkpoint-6")  # a bare name inside --output_dir
    assert "has no manifest.json" in result.stderr and "checkpoint-6 at step 6" in result.stderr
    assert reports(tmp_path / "reports")[0]["weights_sha256"] == reference["raw"]


def fake_checkpoint(folder, step, good=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "training_state.json").write_text(json.dumps({"global_step": step}))
    (path / "model.safetensors").write_bytes(b"weights")
    write_manifest(path)
    if not good:
        (path / "model.safetensors").write_bytes(b"weighs")
    return path


def test_the_total_limit_never_deletes_the_newest_checkpoint_that_verifies(tmp_path):
    fake_checkpoint(tmp_path, 2)
    written = fake_checkpoint(tmp_path, 4)
    fake_checkpoint(tmp_path, 6, good=False)  # newer, damaged: a resume fell back past it
    prune_checkpoints(tmp_path, 1, written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]


# ---------------------------------------------------------------------------------------------------- the lock


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_first_is_unaffected(reference, tmp_path):
    folder, release = tmp_path / "run", tmp_path / "release-the-first-run"
    args = train_args(folder, reference["config"], *STEPS)
    # The first run holds its lock and waits (tests/helpers/train_and_report.py) until the second has been refused.
    first = launch(args, report_dir=tmp_path / "r1", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                   extra_env={"TRAIN_HOLD_UNTIL": str(release)})
    try:
        deadline = time.time() + 120
        while not (folder / LOCK_NAME).exists() and time.time() < deadline:
            time.sleep(0.2)
        second = launch([*args, "--seed", "1"], report_dir=tmp_path / "r2", check=False)
        assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    finally:
        release.touch()
    assert second.returncode != 0
    assert f"--output_dir {folder} is in use by another run (host {socket.gethostname()}, PID" in second.stderr
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    assert reports(tmp_path / "r1")[0]["global_step"] == 8 and not (tmp_path / "r2").exists()
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6", "checkpoint-8"]
    assert not (folder / LOCK_NAME).exists()  # released at the end


def test_the_lock_of_a_killed_run_is_taken_over_on_resume(reference, tmp_path):
    folder = tmp_path / "run"
    args = train_args(folder, reference["config"], "--max_train_steps", 200, "--checkpointing_steps", 3,
                      "--save_images_steps", 1000, "--no_evaluate")
    run = launch(args, report_dir=tmp_path / "r1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 start_new_session=True)
    deadline = time.time() + 300
    while not (folder / "checkpoint-3").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert (folder / LOCK_NAME).exists()  # a SIGKILL leaves it behind
    result = launch(train_args(folder, reference["config"], *STEPS, "--resume_from_checkpoint", "latest"),
                    report_dir=tmp_path / "r2")
    assert "taking over the lock of a run that is gone" in result.stderr


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("content, warning", [
    ("not json at all", "cannot be read; treating it as stale"),
    (None, "taking over the lock of a run that is gone"),
])
def test_a_stale_or_unreadable_lock_is_taken_over_with_a_warning(tmp_path, caplog, content, warning):
    if content is None:
        content = json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "started": "earlier"})
    (tmp_path / LOCK_NAME).write_text(content)
    with caplog.at_level("WARNING"), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert warning in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("host", [socket.gethostname(), "another-machine"])
def test_a_lock_held_by_a_live_or_remote_run_is_refused_naming_the_holder(tmp_path, host):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": host, "pid": os.getppid(), "started": "t0"}))
    with pytest.raises(RunFolderError, match=f"in use by another run \\(host {host}, PID {os.getppid()}, started t0\\)"):
        RunLock(tmp_path).acquire()


# ---------------------------------------------------------------------------------------------------- mixing


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused_naming_both_ways_out(tmp_path):
    fake_checkpoint(tmp_path / "run", 3)
    with pytest.raises(RunFolderError, match="another run's checkpoints.*--resume_from_checkpoint latest.*"
                                             "--overwrite_output_dir"):
        run_main("--output_dir", tmp_path / "run")


def test_a_fresh_run_into_a_folder_with_a_saved_pipeline_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model_index.json").write_text("{}")
    with pytest.raises(RunFolderError, match="another run's a saved pipeline"):
        check_fresh_run(tmp_path / "run", None, False)


def test_an_empty_or_missing_folder_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_fresh_run(tmp_path / "empty", None, False) == []
    assert check_fresh_run(tmp_path / "missing", None, False) == []


def test_overwrite_output_dir_removes_the_old_run_and_says_what_it_removed(reference, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(reference["folder"], folder)
    (folder / "my_notes.txt").write_text("not the run's")
    result = launch(train_args(folder, reference["config"], "--max_train_steps", 2, "--checkpointing_steps", 2,
                               "--save_images_steps", 1000, "--no_evaluate", "--overwrite_output_dir"),
                    report_dir=tmp_path / "r")
    assert "--overwrite_output_dir: removed" in result.stderr and "checkpoint-8" in result.stderr
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (folder / "my_notes.txt").is_file()


def test_overwrite_output_dir_with_resume_from_checkpoint_is_refused_naming_both(tmp_path):
    with pytest.raises(SystemExit, match="--overwrite_output_dir and --resume_from_checkpoint contradict"):
        run_main("--output_dir", tmp_path, "--overwrite_output_dir", "--resume_from_checkpoint", "latest")
