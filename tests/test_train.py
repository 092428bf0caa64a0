"""scripts/train.py end to end: launched through `accelerate launch`, resumed, killed, on two processes.

The runs use a tiny U-Net and a handful of steps; what they check does not depend on size.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from script_modules import load_script

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchUNet

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"
REPORTER = ROOT / "tests" / "helpers" / "train_and_report.py"
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
TINY_UNET = dict(
    sample_size=8, in_channels=1, out_channels=1, base_channels=16, channel_multipliers=[1, 2],
    num_res_blocks=1, attention_levels=[1], attention_heads=1, dropout=0.1, norm_num_groups=8,
)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    path = tmp_path / "tiny_unet.json"
    path.write_text(json.dumps(TINY_UNET))
    return path


def train_args(output_dir, config, *extra) -> list[str]:
    return [
        "--output_dir", str(output_dir), "--model_config", str(config), "--train_batch_size", "32",
        "--num_inference_steps", "4", "--num_grid_images", "4", "--lr_warmup_steps", "2",
        "--eval_num_samples", "8", "--eval_num_bound_images", "2", *map(str, extra),
    ]


def free_port() -> int:
    """A port nothing listens on now, so that two runs of the suite at once never share a rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(args, num_processes=1, report_dir=None, script=REPORTER, check=True, extra_env=None,
           through_accelerate=None, **popen):
    """Run ``script`` (scripts/train.py's main, reporting each rank) as its own process.

    Several processes, or ``through_accelerate=True``, go through `accelerate launch`, the documented command; a
    single process otherwise runs the script directly, which builds the same one-process Accelerator and saves
    the launcher's own start-up (torch and accelerate imported once more, ~4 s a run, ~40 runs in the suite).
    """
    if through_accelerate is None:
        through_accelerate = num_processes > 1
    command = [sys.executable]
    if through_accelerate:
        command = [*ACCELERATE, "--num_machines", "1", "--num_processes", str(num_processes),
                   "--mixed_precision", "no", "--dynamo_backend", "no"]
        if num_processes > 1:
            command += ["--multi_gpu", "--main_process_port", str(free_port())]
    elif num_processes != 1:
        raise ValueError("several processes need accelerate launch")
    env = {**os.environ, "TRAIN_REPORT_DIR": str(report_dir or "/nonexistent"), "OMP_NUM_THREADS": "1",
           **(extra_env or {})}
    command += [str(script), *args]
    if popen:
        return subprocess.Popen(command, env=env, cwd=ROOT, **popen)
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def reports(report_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(report_dir.glob("rank-*.json"))]


def unet_weights(folder: Path) -> dict:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_a_launched_run_writes_a_loadable_pipeline_grids_logs_and_model_card(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 4, "--save_images_steps", 2,
                      "--checkpointing_steps", 2), report_dir=tmp_path / "reports", through_accelerate=True)
    assert (out / "model_index.json").is_file()
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert [p.name for p in sorted((out / "samples").iterdir())] == ["step-2.png", "step-4.png"]
    assert Image.open(out / "samples" / "step-4.png").size == (2 * 8 * 32 + 2,) * 2  # 2×2 of 8×8, ×32, 2-px gap
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "step-4.png" in card and "$" not in card.split("```")[0]
    evaluation = json.loads((out / "evaluation.json").read_text())  # the run evaluated itself
    assert "model-index" in card and f"{evaluation['bound']['bits_per_dim']:.3f}" in card
    assert "Not evaluated yet" not in card
    pipe = DDPMFromScratchPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=2, num_inference_steps=3, output_type="np").images.shape == (2, 8, 8, 1)


def test_the_saved_pipeline_carries_the_ema_weights(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 3, "--checkpointing_steps", 3, "--no_evaluate"),
           report_dir=tmp_path / "reports")
    ema = load_file(out / "checkpoint-3" / "unet_ema" / "diffusion_pytorch_model.safetensors")
    raw = load_file(out / "checkpoint-3" / "model.safetensors")
    saved = unet_weights(out)
    assert all(torch.equal(saved[k], ema[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)


def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, tiny_config):
    # Batch 32 over 1,497 images: 47 batches an epoch, so step 60 resumes mid-epoch (position 13 of epoch 1).
    steps = ["--max_train_steps", 64, "--checkpointing_steps", 60, "--save_images_steps", 1000, "--random_flip",
             "--no_evaluate"]
    whole = tmp_path / "whole"
    launch(train_args(whole, tiny_config, *steps), report_dir=tmp_path / "r1")
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-60", resumed / "checkpoint-60")
    launch(train_args(resumed, tiny_config, *steps, "--resume_from_checkpoint", "latest"),
           report_dir=tmp_path / "r2")
    # Tolerance: none. Same draws, same arithmetic, same order on the CPU: bit-identical.
    assert reports(tmp_path / "r1")[0]["weights_sha256"] == reports(tmp_path / "r2")[0]["weights_sha256"]
    expected, got = unet_weights(whole), unet_weights(resumed)  # the EMA weights
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(tmp_path, tiny_config):
    out = tmp_path / "run"
    args = train_args(out, tiny_config, "--max_train_steps", 40, "--checkpointing_steps", 1,
                      "--save_images_steps", 1000, "--logger", "none", "--no_evaluate")
    process = launch(args, script=TRAIN, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not list(out.glob(".checkpoint-*.tmp")) or not list(out.glob("checkpoint-*")):
            assert process.poll() is None and time.time() < deadline, "training ended before a save was caught"
            time.sleep(0.001)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints and int(checkpoints[-1].name.split("-")[1]) < 40
    for checkpoint in checkpoints:  # every visible checkpoint is complete and loadable
        state = json.loads((checkpoint / "training_state.json").read_text())
        assert state["global_step"] == int(checkpoint.name.split("-")[1])
        assert load_file(checkpoint / "model.safetensors")
        DDPMFromScratchUNet.from_pretrained(checkpoint / "unet_ema")

    launch([*args, "--resume_from_checkpoint", "latest"], report_dir=tmp_path / "reports")
    assert reports(tmp_path / "reports")[0]["global_step"] == 40
    assert not list(out.glob(".checkpoint-*.tmp"))


def test_two_processes_shard_the_data_and_end_with_identical_weights(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 4, "--save_images_steps", 4,
                      "--checkpointing_steps", 4, "--train_batch_size", 16, "--no_evaluate"),
           num_processes=2, report_dir=tmp_path / "reports")
    rank0, rank1 = reports(tmp_path / "reports")
    assert rank0["weights_sha256"] == rank1["weights_sha256"]
    assert rank0["images_seen"] == rank1["images_seen"] == 4 * 16
    assert rank0["pixel_sum"] != rank1["pixel_sum"]  # different images on each rank
    # Files come from rank 0 alone: event logs of one process (their names end in host.pid.n), one grid.
    writers = {p.name.split(".")[-2] for p in (out / "logs").rglob("events.out.tfevents.*")}
    assert len(writers) == 1
    assert [p.name for p in (out / "samples").iterdir()] == ["step-4.png"]
    assert sorted(p.name for p in (out / "checkpoint-4").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]


def test_learning_rate_schedule_counts_optimiser_steps_under_accumulation(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 3, "--gradient_accumulation_steps", 2,
                      "--lr_scheduler", "linear", "--lr_warmup_steps", 1, "--checkpointing_steps", 3,
                      "--save_images_steps", 1000, "--no_evaluate"), report_dir=tmp_path / "reports")
    state = json.loads((out / "checkpoint-3" / "training_state.json").read_text())
    assert state["lr_scheduler"]["last_epoch"] == 3
    assert state["lr_scheduler"]["_last_lr"] == [0.0]  # linear decay reaches 0 exactly at the last step


def test_bf16_mixed_precision_trains(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 2, "--mixed_precision", "bf16",
                      "--save_images_steps", 1000, "--no_evaluate"), report_dir=tmp_path / "reports")
    assert torch.isfinite(torch.tensor(reports(tmp_path / "reports")[0]["final_loss"]))


def test_a_non_finite_loss_stops_training_without_writing_a_checkpoint(tmp_path, tiny_config):
    blown_up = DDPMFromScratchUNet.from_config(TINY_UNET)
    with torch.no_grad():
        for p in blown_up.parameters():
            p.fill_(1e30)  # finite weights whose activations overflow to inf
    blown_up.save_pretrained(tmp_path / "blown_up")
    out = tmp_path / "run"
    result = launch(train_args(out, tiny_config, "--pretrained_model_name_or_path", tmp_path / "blown_up",
                               "--loss", "simple", "--max_train_steps", 3, "--checkpointing_steps", 1),
                    script=TRAIN, check=False)
    assert result.returncode != 0
    assert "non-finite loss" in result.stderr
    assert not list(out.glob("checkpoint-*"))


# ---- bad input is refused before any training, naming the problem --------------------------


def run_main(*args):
    return load_script("train").main(list(map(str, args)))


def test_a_missing_image_folder_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        run_main("--train_data_dir", tmp_path / "no_such_folder", "--output_dir", tmp_path / "out")


def test_an_empty_image_folder_is_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        run_main("--train_data_dir", tmp_path / "empty", "--output_dir", tmp_path / "out")


def test_a_corrupt_image_file_is_refused_by_name(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (8, 8), 128).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="broken.png"):
        run_main("--train_data_dir", folder, "--output_dir", tmp_path / "out")


def test_a_dataset_without_the_image_column_is_refused_naming_the_column(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"pixels": [1, 2]}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="'image'"):
        run_main("--dataset_name", tmp_path / "saved", "--output_dir", tmp_path / "out")


def test_a_resolution_the_unet_cannot_halve_evenly_is_refused(tmp_path):
    with pytest.raises(ValueError, match="resolution 7"):
        run_main("--resolution", 7, "--output_dir", tmp_path / "out")


def test_an_unknown_model_config_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match="no-such-preset"):
        run_main("--model_config", "no-such-preset", "--output_dir", tmp_path / "out")


def test_resuming_from_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        run_main("--resume_from_checkpoint", tmp_path, "--output_dir", tmp_path / "out")


def test_checkpoints_total_limit_keeps_only_the_newest(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 5, "--checkpointing_steps", 1,
                      "--checkpoints_total_limit", 2, "--save_images_steps", 1000, "--logger", "none",
                      "--no_evaluate"), report_dir=tmp_path / "reports")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]


def test_push_to_hub_uploads_the_run_and_the_token_is_written_nowhere(tmp_path, tiny_config, hub):
    out = tmp_path / "run"
    result = launch(train_args(out, tiny_config, "--max_train_steps", 2, "--checkpointing_steps", 1,
                               "--save_images_steps", 2, "--push_to_hub", "--hub_model_id", f"{hub.user}/tiny",
                               "--hub_token", hub.token), script=TRAIN)
    pushed = DDPMFromScratchPipeline.from_pretrained(f"{hub.user}/tiny", token=hub.token,
                                                     cache_dir=tmp_path / "cache")
    assert isinstance(pushed.unet, DDPMFromScratchUNet)
    assert f"# {hub.user}/tiny" in (out / "README.md").read_text()
    assert hub.token not in result.stdout + result.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert hub.token.encode() not in path.read_bytes(), path


def test_push_to_hub_without_a_repo_id_is_refused_before_training(tmp_path):
    with pytest.raises(SystemExit, match="--hub_model_id"):
        run_main("--push_to_hub", "--output_dir", tmp_path / "out")


def test_channels_last_training_matches_the_default_layout(tmp_path, tiny_config):
    # Adam moves every weight by about ±lr whatever the gradient's size, and the layouts differ in rounding and
    # dropout masks: at lr 1e-5 three steps stay within 1e-4, while a scrambled layout would be off by ~0.1.
    common = ["--max_train_steps", 3, "--checkpointing_steps", 3, "--save_images_steps", 1000, "--logger", "none",
              "--no_evaluate", "--no_ema", "--learning_rate", 1e-5]
    launch(train_args(tmp_path / "plain", tiny_config, *common), report_dir=tmp_path / "r1")
    launch(train_args(tmp_path / "fast", tiny_config, *common, "--channels_last"), report_dir=tmp_path / "r2")
    plain, fast = unet_weights(tmp_path / "plain"), unet_weights(tmp_path / "fast")
    assert all(torch.allclose(plain[k], fast[k], atol=1e-4, rtol=0) for k in plain)


def test_compiled_training_matches_eager_training_without_dropout(tmp_path, tiny_config):
    # Without dropout the two runs see the same batches and noise and differ only in summation order: the same
    # losses to float32 rounding. (Compiled dropout draws other masks, which moves the tiny model's loss ~0.1 %.)
    no_dropout = tmp_path / "no_dropout.json"
    no_dropout.write_text(json.dumps({**TINY_UNET, "dropout": 0.0}))
    common = ["--max_train_steps", 3, "--checkpointing_steps", 3, "--save_images_steps", 1000, "--logger", "none",
              "--no_evaluate", "--no_ema", "--learning_rate", 1e-5]
    launch(train_args(tmp_path / "plain", no_dropout, *common), report_dir=tmp_path / "r1")
    launch(train_args(tmp_path / "fast", no_dropout, *common, "--compile"), report_dir=tmp_path / "r2")
    plain_loss, fast_loss = reports(tmp_path / "r1")[0]["final_loss"], reports(tmp_path / "r2")[0]["final_loss"]
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5, abs=0)
    plain, fast = unet_weights(tmp_path / "plain"), unet_weights(tmp_path / "fast")
    assert all(torch.allclose(plain[k], fast[k], atol=1e-4, rtol=0) for k in plain)


def test_compiled_training_is_reproducible_from_the_seed(tmp_path, tiny_config):
    common = ["--max_train_steps", 2, "--checkpointing_steps", 2, "--save_images_steps", 1000, "--logger", "none",
              "--no_evaluate", "--no_ema", "--compile"]
    launch(train_args(tmp_path / "a", tiny_config, *common), report_dir=tmp_path / "r1")
    launch(train_args(tmp_path / "b", tiny_config, *common), report_dir=tmp_path / "r2")
    assert reports(tmp_path / "r1")[0]["weights_sha256"] == reports(tmp_path / "r2")[0]["weights_sha256"]


def test_the_same_seed_starts_from_the_same_weights(tmp_path, tiny_config):
    common = ["--max_train_steps", 1, "--checkpointing_steps", 1, "--save_images_steps", 1000, "--logger", "none",
              "--no_evaluate", "--no_ema", "--learning_rate", 1e-12]
    launch(train_args(tmp_path / "a", tiny_config, *common), report_dir=tmp_path / "r1")
    launch(train_args(tmp_path / "b", tiny_config, *common), report_dir=tmp_path / "r2")
    assert reports(tmp_path / "r1")[0]["weights_sha256"] == reports(tmp_path / "r2")[0]["weights_sha256"]


# ---- a learned variance: --loss hybrid / vlb, --timestep_sampler loss-aware -----------------------------


def test_loss_hybrid_trains_a_learned_range_pipeline_that_samples(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 2, "--checkpointing_steps", 2, "--loss", "hybrid",
                      "--save_images_steps", 1000, "--logger", "none", "--no_evaluate"),
           report_dir=tmp_path / "reports")
    pipe = DDPMFromScratchPipeline.from_pretrained(out)
    assert pipe.unet.config.out_channels == 2 * pipe.unet.config.in_channels
    assert pipe.scheduler.config.variance_type == "learned_range"
    pipe.set_progress_bar_config(disable=True)
    assert pipe(batch_size=2, num_inference_steps=3, output_type="np").images.shape == (2, 8, 8, 1)
    card = (out / "README.md").read_text()
    assert "L_hybrid = L_simple + 0.001·L_vlb" in card and "learned: log σ_t²" in card


@pytest.mark.parametrize(("loss", "sampler"), [("hybrid", "uniform"), ("vlb", "loss-aware")])
def test_a_resumed_learned_variance_run_ends_with_the_same_weights_as_an_uninterrupted_one(
    tmp_path, tiny_config, loss, sampler
):
    # T = 10: the loss-aware sampler has a full history (10 losses per timestep) long before step 20, so the
    # resumed run must restore it to draw the same timesteps.
    steps = ["--max_train_steps", 24, "--checkpointing_steps", 20, "--save_images_steps", 1000, "--no_evaluate",
             "--logger", "none", "--loss", loss, "--timestep_sampler", sampler, "--num_train_timesteps", 10]
    whole = tmp_path / "whole"
    launch(train_args(whole, tiny_config, *steps), report_dir=tmp_path / "r1")
    state = json.loads((whole / "checkpoint-20" / "training_state.json").read_text())
    if sampler == "loss-aware":
        assert state["timestep_sampler"]["counts"] == [10] * 10
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-20", resumed / "checkpoint-20")
    launch(train_args(resumed, tiny_config, *steps, "--resume_from_checkpoint", "latest"), report_dir=tmp_path / "r2")
    first, second = reports(tmp_path / "r1")[0], reports(tmp_path / "r2")[0]
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["timestep_sampler_sha256"] == second["timestep_sampler_sha256"]


def test_two_processes_keep_the_same_loss_history_on_every_rank(tmp_path, tiny_config):
    out = tmp_path / "run"
    launch(train_args(out, tiny_config, "--max_train_steps", 6, "--save_images_steps", 1000, "--no_evaluate",
                      "--checkpointing_steps", 6, "--train_batch_size", 16, "--loss", "vlb", "--timestep_sampler",
                      "loss-aware", "--num_train_timesteps", 10, "--logger", "none"),
           num_processes=2, report_dir=tmp_path / "reports")
    rank0, rank1 = reports(tmp_path / "reports")
    assert rank0["timestep_sampler_sha256"] == rank1["timestep_sampler_sha256"]
    state = json.loads((out / "checkpoint-6" / "training_state.json").read_text())["timestep_sampler"]
    assert min(state["counts"]) > 0  # 192 losses from both ranks recorded over the 10 timesteps
    assert rank0["weights_sha256"] == rank1["weights_sha256"]


def test_loss_hybrid_refuses_a_pretrained_epsilon_only_unet(tmp_path):
    DDPMFromScratchUNet.from_config(TINY_UNET).save_pretrained(tmp_path / "eps_only")
    with pytest.raises(ValueError, match="--loss hybrid .*out_channels=1"):
        run_main("--loss", "hybrid", "--pretrained_model_name_or_path", tmp_path / "eps_only",
                 "--output_dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [0, -0.5])
def test_a_non_positive_vlb_weight_is_refused_by_name(tmp_path, value):
    with pytest.raises(SystemExit, match=f"--vlb_weight must be positive, got {value}"):
        run_main("--loss", "hybrid", "--vlb_weight", value, "--output_dir", tmp_path / "out")


def test_an_unknown_timestep_sampler_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main("--timestep_sampler", "importance", "--output_dir", tmp_path / "out")
    assert exit_info.value.code == 2
    assert "--timestep_sampler: invalid choice: 'importance'" in capsys.readouterr().err


def test_a_non_finite_vlb_stops_training_without_writing_a_checkpoint(tmp_path, tiny_config):
    blown_up = DDPMFromScratchUNet.from_config({**TINY_UNET, "out_channels": 2})
    with torch.no_grad():
        for p in blown_up.parameters():
            p.fill_(1e30)
    blown_up.save_pretrained(tmp_path / "blown_up")
    out = tmp_path / "run"
    result = launch(train_args(out, tiny_config, "--pretrained_model_name_or_path", tmp_path / "blown_up",
                               "--loss", "vlb", "--max_train_steps", 3, "--checkpointing_steps", 1),
                    script=TRAIN, check=False)
    assert result.returncode != 0
    assert "non-finite loss" in result.stderr
    assert not list(out.glob("checkpoint-*"))


def test_the_grids_and_the_evaluation_use_the_chosen_sampler_and_its_usual_steps(tmp_path, tiny_config):
    out = tmp_path / "run"
    args = train_args(out, tiny_config, "--max_train_steps", 2, "--checkpointing_steps", 2, "--logger", "none",
                      "--sampler", "ddim")
    at = args.index("--num_inference_steps")
    del args[at:at + 2]  # the sampler's own default step count
    launch(args, report_dir=tmp_path / "reports")
    quality = json.loads((out / "evaluation.json").read_text())["sample_quality"]
    assert (quality["sampler"], quality["num_inference_steps"]) == ("ddim", 50)
    assert (out / "samples" / "step-2.png").is_file()


@pytest.mark.parametrize(("flags", "message"), [
    (["--log_snr_max", "13"], "--log_snr_max and --log_snr_min together"),
    (["--log_snr_max", "-10", "--log_snr_min", "13"], "--log_snr_max must exceed --log_snr_min"),
    (["--log_snr_max", "16", "--log_snr_min", "-10"], "below float32's resolution"),
])
def test_a_log_snr_schedule_float32_cannot_hold_is_refused_naming_the_flag(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        run_main(*flags, "--output_dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_log_snr_schedule_is_saved_as_trained_betas_that_diffusers_loads(tmp_path, tiny_config):
    from diffusers import DDPMScheduler

    from ddpm_from_scratch.schedulers.log_snr_schedules import log_snr_linear_betas

    run_main("--model_config", tiny_config, "--loss", "simple", "--log_snr_max", "12", "--log_snr_min", "-9",
             "--max_train_steps", "1", "--no_evaluate", "--logger", "none", "--save_images_steps", "100",
             "--output_dir", tmp_path / "out")
    theirs = DDPMScheduler.from_pretrained(tmp_path / "out", subfolder="scheduler")
    alphas_cumprod = torch.sigmoid(torch.linspace(12, -9, 1000, dtype=torch.float64))
    torch.testing.assert_close(theirs.alphas_cumprod.double(), alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert torch.equal(theirs.betas, torch.as_tensor(log_snr_linear_betas(1000, 12, -9), dtype=torch.float32))


def test_fourier_features_are_refused_with_a_pretrained_network(tmp_path):
    with pytest.raises(SystemExit, match="--fourier_features builds a new network"):
        run_main("--fourier_features", "4", "--pretrained_model_name_or_path", tmp_path, "--output_dir", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_fourier_features_are_saved_in_the_trained_networks_config(tmp_path, tiny_config):
    run_main("--model_config", tiny_config, "--loss", "simple", "--fourier_features", "4", "7",
             "--max_train_steps", "1", "--no_evaluate", "--logger", "tensorboard", "--save_images_steps", "100",
             "--output_dir", tmp_path / "out")
    unet = DDPMFromScratchUNet.from_pretrained(tmp_path / "out", subfolder="unet")
    assert unet.config.fourier_feature_exponents == (4, 7)
    assert unet.conv_in.in_channels == unet.config.in_channels * 5


@pytest.mark.parametrize(("flags", "message"), [
    (["--beta_start", "0"], "--beta_start must lie in"),
    (["--beta_end", "1.5"], "--beta_end must lie in"),
    (["--beta_start", "0.03", "--beta_end", "0.02"], "--beta_start must be below --beta_end"),
    (["--beta_start", "1e-6", "--log_snr_max", "12", "--log_snr_min", "-9"], "--beta_start and --log_snr_min"),
    (["--beta_start", "1e-9"], "--beta_start 1e-09 gives steps of ᾱ below float32's resolution"),
])
def test_a_beta_range_the_schedule_cannot_hold_is_refused_naming_the_flag(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        run_main(*flags, "--output_dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_beta_start_is_saved_in_the_scheduler_config_diffusers_loads(tmp_path, tiny_config):
    from diffusers import DDPMScheduler

    run_main("--model_config", tiny_config, "--loss", "simple", "--beta_start", "2.26e-6", "--max_train_steps", "1",
             "--no_evaluate", "--logger", "none", "--save_images_steps", "100", "--output_dir", tmp_path / "out")
    theirs = DDPMScheduler.from_pretrained(tmp_path / "out", subfolder="scheduler")
    assert theirs.config.beta_start == 2.26e-6
    expected = torch.linspace(2.26e-6, 0.02, 1000, dtype=torch.float32)
    assert torch.equal(theirs.betas, expected)


@pytest.mark.parametrize(("flags", "message"), [
    (["--log_snr_head_steps", "300"], "--log_snr_head_steps needs --log_snr_max and no --log_snr_min"),
    (["--log_snr_head_steps", "300", "--log_snr_max", "13", "--log_snr_min", "-10"], "needs --log_snr_max and no"),
    (["--log_snr_head_steps", "1000", "--log_snr_max", "13"], r"--log_snr_head_steps must lie in \(0"),
    (["--log_snr_head_steps", "300", "--log_snr_max", "8"], "--log_snr_max: log_snr_max=8.0 must exceed"),
])
def test_a_high_snr_head_that_is_none_is_refused_naming_the_flag(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        run_main(*flags, "--output_dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--log_snr_prefix_steps", "50"], "--log_snr_prefix_steps needs --log_snr_max and no --log_snr_min"),
    (["--log_snr_prefix_steps", "0", "--log_snr_max", "13"], "--log_snr_prefix_steps must be positive, got 0"),
    (["--log_snr_prefix_steps", "50", "--log_snr_head_steps", "100", "--log_snr_max", "13"], "give one"),
    (["--log_snr_prefix_steps", "50", "--log_snr_max", "8"], "--log_snr_max: log_snr_max=8.0 must exceed"),
])
def test_a_high_snr_prefix_that_is_none_is_refused_naming_the_flag(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        run_main(*flags, "--output_dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_high_snr_prefix_lengthens_the_chain_by_its_steps():
    from ddpm_from_scratch.schedulers.log_snr_schedules import high_snr_prefix_betas

    train = load_script("train")
    args = train.parse_args(["--log_snr_max", "13", "--log_snr_prefix_steps", "50", "--beta_end", "0.03"])
    scheduler = train.build_noise_scheduler(args)
    assert scheduler.config.num_train_timesteps == 1050
    expected = torch.as_tensor(high_snr_prefix_betas(1000, 13, 50, beta_end=0.03), dtype=torch.float32)
    assert torch.equal(scheduler.betas, expected)


def test_a_high_snr_head_is_saved_as_trained_betas(tmp_path, tiny_config):
    from diffusers import DDPMScheduler

    from ddpm_from_scratch.schedulers.log_snr_schedules import high_snr_head_betas

    run_main("--model_config", tiny_config, "--loss", "simple", "--log_snr_max", "13", "--log_snr_head_steps", "300",
             "--max_train_steps", "1", "--no_evaluate", "--logger", "none", "--save_images_steps", "100",
             "--output_dir", tmp_path / "out")
    theirs = DDPMScheduler.from_pretrained(tmp_path / "out", subfolder="scheduler")
    assert torch.equal(theirs.betas, torch.as_tensor(high_snr_head_betas(1000, 13, 300), dtype=torch.float32))


def test_a_high_snr_prefix_is_saved_with_the_pipeline_so_its_samplers_step_past_it(tmp_path, tiny_config):
    from ddpm_from_scratch import DDPMFromScratchPipeline

    run_main("--model_config", tiny_config, "--loss", "simple", "--log_snr_max", "13", "--log_snr_prefix_steps", "50",
             "--max_train_steps", "1", "--no_evaluate", "--logger", "none", "--save_images_steps", "100",
             "--output_dir", tmp_path / "out")
    pipe = DDPMFromScratchPipeline.from_pretrained(tmp_path / "out")
    assert pipe.scheduler.config.num_train_timesteps == 1050 and pipe.log_snr_prefix_steps == 50
