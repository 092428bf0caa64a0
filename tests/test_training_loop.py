"""The package's one training loop (`training.loop.train_loop`), on a toy problem small enough to run in-process.

scripts/train.py runs the same loop; tests/test_train.py checks it end to end through `accelerate launch`
(resume, SIGKILL, two processes). Here: what the toy problems gain from sharing it, and its contract.
"""

import pytest
import torch
from safetensors.torch import load_file

from ddpm_from_scratch.models.toy_models import ToyDenoiser
from ddpm_from_scratch.toy.tasks import swiss_roll_scheduler
from ddpm_from_scratch.toy.training import point_batch_loss, toy_loss, train_toy
from ddpm_from_scratch.training.loop import (
    Hook,
    TensorSamples,
    TrainingConfig,
    build_accelerator,
    train_loop,
)
from ddpm_from_scratch.training.timestep_sampling import create_timestep_sampler

SCHEDULER = swiss_roll_scheduler({"num_train_timesteps": 8, "log_snr_max": 8.0, "log_snr_min": -6.0})


def points(n=96) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(3)) * torch.tensor([1.0, 0.3])


def fresh_model() -> ToyDenoiser:
    torch.manual_seed(0)
    return ToyDenoiser(in_features=2, out_features=4, hidden_size=16, num_blocks=1)


def run(config: TrainingConfig, hooks=(), sampler="loss-aware"):
    model = fresh_model()
    accelerator = build_accelerator(config, mixed_precision="no")
    timestep_sampler = create_timestep_sampler(sampler, SCHEDULER.config.num_train_timesteps)
    result = train_loop(model, toy_loss(point_batch_loss, SCHEDULER), TensorSamples(points()), config, accelerator,
                        timestep_sampler, hooks=hooks)
    return result, timestep_sampler


def config(**overrides) -> TrainingConfig:
    settings = dict(seed=5, train_batch_size=32, max_train_steps=8, learning_rate=1e-2, lr_warmup_steps=2,
                    ema_max_decay=0.9, progress=False)
    return TrainingConfig(**{**settings, **overrides})


def test_a_toy_run_resumed_from_its_checkpoint_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    # 96 points in batches of 32: 3 steps an epoch, so step 4 resumes in the middle of the second epoch.
    whole, whole_sampler = run(config(output_dir=tmp_path / "whole", checkpointing_steps=4))
    resumed, resumed_sampler = run(config(output_dir=tmp_path / "resumed", checkpointing_steps=4,
                                          resume_from=tmp_path / "whole" / "checkpoint-4"))
    assert resumed.global_step == whole.global_step == 8
    for name, tensor in whole.raw_model.state_dict().items():
        assert torch.equal(resumed.raw_model.state_dict()[name], tensor), name
    for name, tensor in whole.model.state_dict().items():  # the EMA, restored from the checkpoint
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    assert resumed_sampler.state_dict() == whole_sampler.state_dict()  # the loss-aware history too
    assert resumed.losses == whole.losses[4:]


def test_the_checkpoint_holds_diffusers_ema_of_the_weights(tmp_path):
    result, _ = run(config(output_dir=tmp_path, checkpointing_steps=8))
    saved = load_file(tmp_path / "checkpoint-8" / "unet_ema" / "diffusion_pytorch_model.safetensors")
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(saved[name], tensor), name


def test_the_result_and_the_hooks_see_the_ema_average_and_the_raw_weights_stay_apart():
    seen = {}

    def remember(step, model):
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}

    result, _ = run(config(), hooks=(Hook(3, remember),))
    assert sorted(seen) == [3, 6, 8]  # every 3 steps and after the last
    assert all(torch.equal(seen[8][k], v) for k, v in result.model.state_dict().items())
    assert any(not torch.equal(seen[8][k], v) for k, v in result.raw_model.state_dict().items())


def test_with_ema_decay_zero_the_average_is_the_last_weights():
    # diffusers' EMAModel with decay 0 copies the weights at every step: an independent reading of "no average".
    result, _ = run(config(ema_max_decay=0.0))
    for name, tensor in result.raw_model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], tensor), name


def test_without_ema_the_result_is_the_raw_model():
    result, _ = run(config(use_ema=False))
    assert result.model is result.raw_model


def test_train_toy_trains_the_callers_model_in_place_and_returns_one_loss_per_step():
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train_toy(model, SCHEDULER, points(), point_batch_loss, max_train_steps=5, batch_size=32,
                       learning_rate=1e-2, seed=0, timestep_sampler="uniform", ema_decay=0.5, progress=False)
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("field, value", [("max_train_steps", 0), ("train_batch_size", -1),
                                          ("gradient_accumulation_steps", 1.5), ("checkpointing_steps", 0)])
def test_a_non_positive_length_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainingConfig.{field} must be a positive integer, got {value}"):
        run(config(**{field: value}))


def test_a_run_without_a_length_is_refused():
    with pytest.raises(ValueError, match="max_train_steps or num_epochs"):
        run(config(max_train_steps=None))


def test_checkpoints_without_an_output_dir_are_refused():
    with pytest.raises(ValueError, match="checkpointing_steps needs an output_dir"):
        run(config(checkpointing_steps=2))
