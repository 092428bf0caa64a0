"""The toy problems of Sohl-Dickstein et al. (2015): bounds, pipelines and the task runner, against known answers."""

import json
import math

import numpy as np
import pytest
import torch
from analytic_models import GaussianPointOptimalModel, HeartbeatBayesDenoiser

from ddpm_from_scratch import (
    BinomialDiffusionPipeline,
    BinomialDiffusionScheduler,
    DDPMFromScratchScheduler,
    PointDiffusionPipeline,
    ToyDenoiser,
)
from ddpm_from_scratch.schedulers.log_snr_schedules import log_snr_linear_betas
from ddpm_from_scratch.toy.data import (
    HEARTBEAT_OPTIMUM_BITS,
    heartbeat_patterns,
    heartbeat_sequences,
    is_heartbeat,
    swiss_roll_splits,
)
from ddpm_from_scratch.toy.likelihood import binomial_negative_bound_bits, point_negative_bound_bits


def heartbeat_chain(T: int = 400):
    scheduler = BinomialDiffusionScheduler(num_train_timesteps=T, stationary_probability=0.2)
    model = HeartbeatBayesDenoiser(patterns=heartbeat_patterns().tolist(),
                                   alphas_cumprod=scheduler.alphas_cumprod.tolist(), stationary_probability=0.2,
                                   in_features=20)
    return scheduler, model


def test_heartbeat_data_are_the_five_phases_equally_often():
    data = heartbeat_sequences(5000, seed=0)
    assert is_heartbeat(data).all()
    counts = torch.stack([(data == p).all(1).sum() for p in heartbeat_patterns()])
    assert counts.sum() == 5000 and (counts - 1000).abs().max() < 4 * math.sqrt(1000 * 0.8)
    assert HEARTBEAT_OPTIMUM_BITS == pytest.approx(math.log2(1 / 5))


def test_the_exact_reverse_marginals_bring_the_heartbeat_bound_to_the_optimum():
    # K ≤ log2 p(x_0) = log2(1/5) for every model; the Bayes-optimal factorised one comes within a few hundredths.
    scheduler, model = heartbeat_chain()
    bound = binomial_negative_bound_bits(model, scheduler, heartbeat_sequences(300, seed=1),
                                         torch.Generator().manual_seed(0))
    k, error = -bound.mean().item(), bound.std().item() / math.sqrt(len(bound))
    assert HEARTBEAT_OPTIMUM_BITS - 0.03 < k < HEARTBEAT_OPTIMUM_BITS + 4 * error


def test_binomial_pipeline_samples_valid_heartbeats_with_the_exact_model():
    scheduler, model = heartbeat_chain()
    pipe = BinomialDiffusionPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=200, generator=torch.Generator().manual_seed(0)).samples
    assert isinstance(samples, np.ndarray) and samples.shape == (200, 20)
    assert is_heartbeat(samples).float().mean().item() >= 0.99
    phases = np.argmax(samples[:, :5], axis=1)
    assert len(set(phases.tolist())) == 5  # every phase appears: no mode dropped


def test_binomial_pipeline_is_deterministic_and_returns_tensors():
    scheduler, model = heartbeat_chain(T=30)
    pipe = BinomialDiffusionPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    a = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="pt").samples
    b = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), output_type="pt").samples
    assert isinstance(a, torch.Tensor) and torch.equal(a, b)
    with pytest.raises(ValueError, match="output_type"):
        pipe(batch_size=1, output_type="pil")
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=0)


def point_chain(T: int = 40):
    betas = log_snr_linear_betas(T, 8.0, -8.0)
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=T, trained_betas=betas.tolist(), variance_type="learned",
                                         clip_sample=False)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return scheduler, alphas_cumprod


def test_the_point_bound_with_the_exact_reverse_kernel_is_the_entropy_plus_the_prior_mismatch():
    # With p(x_{t−1}|x_t) = q(x_{t−1}|x_t) exactly, E[L] = H(x_0) + KL(q(x_T) ‖ N(0, I)) (in bits per point).
    m, s, T = 0.3, 0.5, 40
    scheduler, alphas_cumprod = point_chain(T)
    model = GaussianPointOptimalModel(mean=m, std=s, alphas_cumprod=alphas_cumprod.tolist())
    points = m + s * torch.randn(20_000, 2, generator=torch.Generator().manual_seed(0))
    bound = point_negative_bound_bits(model, scheduler, points, torch.Generator().manual_seed(1))
    entropy = 2 * 0.5 * math.log2(2 * math.pi * math.e * s ** 2)
    a = alphas_cumprod[-1].item()
    mean_T, var_T = math.sqrt(a) * m, a * s ** 2 + 1 - a
    prior_mismatch = 2 * 0.5 * (var_T + mean_T ** 2 - 1 - math.log(var_T)) / math.log(2)
    error = bound.std().item() / math.sqrt(len(bound))
    assert bound.mean().item() == pytest.approx(entropy + prior_mismatch, abs=4 * error + 1e-3)


def test_point_pipeline_samples_have_the_datas_mean_and_spread_with_the_exact_model():
    m, s = 0.3, 0.5
    scheduler, alphas_cumprod = point_chain()
    pipe = PointDiffusionPipeline(unet=GaussianPointOptimalModel(mean=m, std=s, alphas_cumprod=alphas_cumprod.tolist()),
                                  scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=20_000, generator=torch.Generator().manual_seed(0), output_type="pt").samples
    assert samples.shape == (20_000, 2)
    n = samples.numel()
    assert abs(samples.mean().item() - m) < 5 * s / math.sqrt(n)
    assert abs(samples.std().item() - s) < 5 * s / math.sqrt(2 * n)


def test_swiss_roll_splits_are_unit_variance_and_independent():
    train, test, scale = swiss_roll_splits(4000, 1000, seed=0)
    np.testing.assert_allclose(train.mean(0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(train.std(0, unbiased=False).numpy(), 1, atol=1e-5)
    assert not any(torch.equal(test[0], row) for row in train)
    assert set(scale) == {"mean", "std"}


@pytest.mark.parametrize("pipeline_class, scheduler, features, out", [
    (BinomialDiffusionPipeline, BinomialDiffusionScheduler(num_train_timesteps=20, stationary_probability=0.2), 20,
     None),
    (PointDiffusionPipeline, DDPMFromScratchScheduler(num_train_timesteps=10, variance_type="learned_range",
                                                      clip_sample=False), 2, 4),
])
def test_toy_pipelines_save_and_load_with_the_same_samples(tmp_path, pipeline_class, scheduler, features, out):
    torch.manual_seed(0)
    pipe = pipeline_class(unet=ToyDenoiser(in_features=features, out_features=out, hidden_size=16, num_blocks=1),
                          scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", pipeline_class.__name__]  # shipped as pipeline.py
    assert not list((tmp_path / "pipe").rglob("*.bin")) and list((tmp_path / "pipe").rglob("*.safetensors"))
    loaded = pipeline_class.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    want = pipe(batch_size=3, generator=torch.Generator().manual_seed(1), output_type="pt").samples
    got = loaded(batch_size=3, generator=torch.Generator().manual_seed(1), output_type="pt").samples
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_toy_pipeline_pushed_to_the_hub_loads_with_the_package(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    pipe = BinomialDiffusionPipeline(unet=ToyDenoiser(in_features=20, hidden_size=16, num_blocks=1),
                                     scheduler=BinomialDiffusionScheduler(num_train_timesteps=20))
    pipe.set_progress_bar_config(disable=True)
    pipe.push_to_hub("tester/heartbeat", token=hub.token)
    files = hub.files("tester/heartbeat")
    index = json.loads(files["model_index.json"])
    assert index["scheduler"] == ["scheduling_binomial", "BinomialDiffusionScheduler"]
    assert "scheduler/scheduling_binomial.py" in files and "unet/toy_models.py" in files
    loaded = BinomialDiffusionPipeline.from_pretrained("tester/heartbeat", cache_dir=tmp_path / "cache")
    assert type(loaded.scheduler) is BinomialDiffusionScheduler and type(loaded.unet) is ToyDenoiser
    loaded.set_progress_bar_config(disable=True)
    want = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), output_type="pt").samples
    torch.testing.assert_close(loaded(batch_size=2, generator=torch.Generator().manual_seed(1),
                                      output_type="pt").samples, want, rtol=0, atol=0)


def test_toy_denoiser_refuses_a_sample_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"sample must have shape \(B, 20\)"):
        ToyDenoiser(in_features=20, hidden_size=8, num_blocks=1)(torch.zeros(2, 19), 0)


@pytest.fixture
def tiny_tasks(monkeypatch):
    from ddpm_from_scratch.toy import tasks as toy_tasks

    monkeypatch.setitem(toy_tasks.HEARTBEAT, "num_train_timesteps", 20)
    monkeypatch.setitem(toy_tasks.HEARTBEAT, "hidden_size", 16)
    monkeypatch.setitem(toy_tasks.HEARTBEAT, "num_blocks", 1)
    for name, value in (("num_train", 200), ("num_test", 30), ("num_samples", 30), ("eval_every", 5),
                        ("num_eval_during_training", 10), ("batch_size", 16)):
        monkeypatch.setitem(toy_tasks.HEARTBEAT, name, value)
    for name, value in (("num_train_timesteps", 8), ("hidden_size", 16), ("num_blocks", 1), ("num_train", 300),
                        ("num_test", 50), ("batch_size", 32), ("bound_draws", 1), ("gmm_components", 3)):
        monkeypatch.setitem(toy_tasks.SWISS_ROLL, name, value)
    return toy_tasks


@pytest.mark.parametrize("task, extra_key, pipeline_class", [
    ("heartbeat", "optimum_bits", BinomialDiffusionPipeline),
    ("swiss-roll", "baseline_bits", PointDiffusionPipeline),
])
def test_the_toy_script_writes_pipeline_figure_and_results(tmp_path, tiny_tasks, task, extra_key, pipeline_class):
    from script_modules import load_script

    out = tmp_path / "out"
    results = load_script("toy").main([task, "--output_dir", str(out), "--max_train_steps", "10", "--quiet"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == task and saved == json.loads(json.dumps(results))
    assert math.isfinite(saved["bound_bits"]) and saved["paper_bits"] == tiny_tasks.PAPER_BITS[task]
    assert extra_key in saved
    assert list(out.glob("*.png"))
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", pipeline_class.__name__]
    pipeline_class.from_pretrained(out)


def test_the_heartbeat_optimum_and_the_mixture_baseline_are_what_they_claim(tiny_tasks):
    assert tiny_tasks.HEARTBEAT_OPTIMUM_BITS == pytest.approx(-2.321928, abs=1e-6)
    # A one-component mixture of Gaussian data is the Gaussian fit: its held-out score is the Gaussian entropy.
    rng = torch.Generator().manual_seed(0)
    train, test = torch.randn(20_000, 2, generator=rng) * 0.5, torch.randn(20_000, 2, generator=rng) * 0.5
    want = -math.log2(2 * math.pi * math.e * 0.25)
    assert tiny_tasks.gaussian_mixture_bits(train, test, 1, seed=0) == pytest.approx(want, abs=0.03)


def test_the_binomial_bound_refuses_data_that_are_not_bits():
    scheduler, model = heartbeat_chain(T=10)
    with pytest.raises(ValueError, match="sequences must be binary .* 2.0"):
        binomial_negative_bound_bits(model, scheduler, torch.full((2, 20), 2.0))


def test_the_cross_entropy_term_adds_the_bits_of_the_x0_estimate():
    scheduler, model = heartbeat_chain(T=20)
    from ddpm_from_scratch.toy.training import binomial_batch_loss

    data = heartbeat_sequences(8, seed=0)
    t = torch.full((8,), 5)
    plain = binomial_batch_loss(model, scheduler, data, t, torch.Generator().manual_seed(0))
    with_ce = binomial_batch_loss(model, scheduler, data, t, torch.Generator().manual_seed(0), cross_entropy_weight=2.0)
    noisy = scheduler.add_noise(data, t, generator=torch.Generator().manual_seed(0))
    p = torch.sigmoid(model(noisy, t).sample.double())
    bits = -(data * torch.log2(p) + (1 - data) * torch.log2(1 - p)).sum(1)
    torch.testing.assert_close(with_ce - plain, 2.0 * bits)
