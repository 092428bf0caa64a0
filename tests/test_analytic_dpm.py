"""Analytic-DPM (Bao et al. 2022): σ*², Γ, the optimal trajectory, and the scheduler that samples and bounds with them."""

import itertools

import numpy as np
import pytest
import torch
from analytic_models import GaussianOptimalDenoiser, linear_alphas_cumprod

from ddpm_from_scratch import AnalyticDPMScheduler, DDPMFromScratchPipeline, DDPMFromScratchScheduler
from ddpm_from_scratch.schedulers.analytic_variance import (
    analytic_scheduler,
    estimate_gamma,
    optimal_trajectory,
    trajectory_costs,
)
from ddpm_from_scratch.likelihood import variational_bound
from ddpm_from_scratch.schedulers.scheduling_analytic_dpm import analytic_variance

T = 100
MEAN, STD = 0.15, 0.2  # GaussianOptimalDenoiser's data N(m, s² I)


def gaussian_gamma(num_train_timesteps: int = T) -> np.ndarray:
    """Γ_t of the Bayes-optimal ε for x_0 ~ N(m, s²): E[ε | x_t]² averages to (1 − ᾱ)/(ᾱ s² + 1 − ᾱ)."""
    ac = linear_alphas_cumprod(num_train_timesteps)
    return (1 - ac) / (ac * STD**2 + 1 - ac)


def gaussian_reverse_variance(ac_t: np.ndarray, ac_s: np.ndarray) -> np.ndarray:
    """Var(x_s | x_t) for Gaussian data: β̃ + coef₁² · Var(x_0 | x_t), the exact optimal σ² (float64)."""
    beta = 1 - ac_t / ac_s
    tilde_beta = (1 - ac_s) / (1 - ac_t) * beta
    coef = np.sqrt(ac_s) * beta / (1 - ac_t)
    posterior_x0 = STD**2 * (1 - ac_t) / (ac_t * STD**2 + 1 - ac_t)
    return tilde_beta + coef**2 * posterior_x0


def test_sigma_star_is_the_exact_reverse_variance_of_gaussian_data_on_the_training_chain():
    ac = linear_alphas_cumprod(T)
    t = np.arange(1, T)
    got = analytic_variance(torch.tensor(ac[t]), torch.tensor(ac[t - 1]), torch.tensor(gaussian_gamma()[t]))
    np.testing.assert_allclose(got.numpy(), gaussian_reverse_variance(ac[t], ac[t - 1]), rtol=1e-10)


def test_sigma_star_is_the_exact_reverse_variance_of_gaussian_data_on_a_respaced_chain():
    ac = linear_alphas_cumprod(T)
    t, s = np.array([99, 80, 41, 7]), np.array([80, 41, 7, 0])
    got = analytic_variance(torch.tensor(ac[t]), torch.tensor(ac[s]), torch.tensor(gaussian_gamma()[t]))
    np.testing.assert_allclose(got.numpy(), gaussian_reverse_variance(ac[t], ac[s]), rtol=1e-10)


def test_sigma_star_is_the_paper_ddpm_form_when_unclipped():
    # σ*² = (β/α)(1 − β Γ / β̄) (Bao et al., eq. 7 with the score's moment Γ/β̄).
    ac_t, ac_s, gamma = torch.tensor([0.5]), torch.tensor([0.6]), torch.tensor([0.7])
    beta = 1 - ac_t / ac_s
    expected = beta / (1 - beta) * (1 - beta * gamma / (1 - ac_t))
    torch.testing.assert_close(analytic_variance(ac_t, ac_s, gamma), expected.double().float(), rtol=1e-6, atol=0)


def test_sigma_star_is_clipped_below_at_the_posterior_variance():
    ac_t, ac_s = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.6], dtype=torch.float64)
    tilde_beta = (1 - ac_s) / (1 - ac_t) * (1 - ac_t / ac_s)
    torch.testing.assert_close(analytic_variance(ac_t, ac_s, torch.tensor([3.0], dtype=torch.float64)), tilde_beta)


def test_sigma_star_is_clipped_above_at_the_data_range_bound():
    # (β̄/ᾱ)(1 − Γ) > 1 at low ᾱ with Γ = 0: σ*² = β̃ + ᾱ_s β² / β̄² (Theorem 2 with (b − a)/2 = 1).
    ac_t, ac_s = torch.tensor([0.01], dtype=torch.float64), torch.tensor([0.02], dtype=torch.float64)
    beta = 1 - ac_t / ac_s
    expected = (1 - ac_s) / (1 - ac_t) * beta + ac_s * beta**2 / (1 - ac_t) ** 2
    torch.testing.assert_close(analytic_variance(ac_t, ac_s, torch.zeros(1, dtype=torch.float64)), expected)


def test_step_into_the_data_keeps_the_posterior_variance():
    assert analytic_variance(torch.tensor([0.9]), torch.tensor([1.0]), torch.tensor([0.1])).item() == pytest.approx(1e-20)


@pytest.mark.parametrize("estimator", ["norm", "error"])
def test_estimated_gamma_of_the_exact_denoiser_is_the_closed_form(estimator):
    images = MEAN + STD * torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    gamma = estimate_gamma(GaussianOptimalDenoiser(sample_size=8, num_train_timesteps=T),
                           DDPMFromScratchScheduler(num_train_timesteps=T), images,
                           generator=torch.Generator().manual_seed(1), progress=False, estimator=estimator)
    # "norm" is relatively precise where Γ is small (early t), "error" absolutely precise everywhere.
    tolerance = {"rtol": 0.05} if estimator == "norm" else {"rtol": 0, "atol": 0.035}
    np.testing.assert_allclose(gamma, gaussian_gamma(), **tolerance)


def test_error_estimate_of_the_x0_error_is_relatively_precise_where_the_norm_estimate_is_not():
    # The x̂_0 error (β̄/ᾱ)(1 − Γ) at the end of the chain: "norm" gets it from 1 − Γ ≈ 0.04 ± 0.02 (noise of Γ),
    # "error" from a mean of small squares.
    images = MEAN + STD * torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    unet, scheduler = GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T), \
        DDPMFromScratchScheduler(num_train_timesteps=T)
    ac = linear_alphas_cumprod(T)
    exact = ((1 - ac) / ac * (1 - gaussian_gamma()))[-10:]
    for estimator, tolerance in (("error", 0.2), ("norm", None)):
        gamma = np.array(estimate_gamma(unet, scheduler, images, generator=torch.Generator().manual_seed(1),
                                        progress=False, estimator=estimator))
        error = ((1 - ac) / ac * (1 - gamma))[-10:]
        if tolerance:
            np.testing.assert_allclose(error, exact, rtol=tolerance)
        else:
            assert np.abs(error / exact - 1).max() > 1


def test_estimate_gamma_reads_the_epsilon_channels_of_a_learned_variance_network():
    class TwoOutputs(torch.nn.Module):
        def forward(self, sample, timesteps):
            return torch.cat([torch.full_like(sample, 0.5), torch.full_like(sample, 9.0)], dim=1)

    gamma = estimate_gamma(TwoOutputs(), DDPMFromScratchScheduler(num_train_timesteps=T, variance_type="learned_range"),
                           torch.zeros(2, 1, 4, 4), progress=False, estimator="norm")
    assert gamma == pytest.approx([0.25] * T)


def test_estimate_gamma_refuses_a_network_that_does_not_predict_noise():
    with pytest.raises(ValueError, match="prediction_type='v_prediction'"):
        estimate_gamma(GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T),
                       DDPMFromScratchScheduler(num_train_timesteps=T, prediction_type="v_prediction"),
                       torch.zeros(2, 1, 4, 4), progress=False)


def test_optimal_trajectory_is_the_brute_force_minimum():
    T_small, K = 12, 4
    scheduler = AnalyticDPMScheduler(gamma=np.linspace(0.05, 0.95, T_small), num_train_timesteps=T_small,
                                     beta_end=0.2)
    cost = trajectory_costs(scheduler)
    best = min(itertools.combinations(range(1, T_small - 1), K - 2),
               key=lambda inner: sum(cost[s, t] for s, t in zip((0, *inner), (*inner, T_small - 1))))
    assert optimal_trajectory(scheduler, K) == [T_small - 1, *best[::-1], 0]


def test_optimal_trajectory_of_full_length_is_the_training_chain():
    scheduler = AnalyticDPMScheduler(gamma=[0.5] * T, num_train_timesteps=T)
    assert optimal_trajectory(scheduler, T) == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("steps", [1, T + 1, 3.0])
def test_optimal_trajectory_refuses_a_bad_length(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        optimal_trajectory(AnalyticDPMScheduler(gamma=[0.5] * T, num_train_timesteps=T), steps)


def exact_analytic_scheduler(**kwargs) -> AnalyticDPMScheduler:
    return AnalyticDPMScheduler(gamma=gaussian_gamma(), num_train_timesteps=T, clip_sample=False, **kwargs)


@pytest.mark.parametrize("steps", [5, 20])
def test_bound_with_sigma_star_is_below_both_fixed_variances_for_the_exact_denoiser(steps):
    unet = GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T)
    images = (torch.round((MEAN + STD * torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 1)
                          * 127.5).clamp(0, 255) / 127.5 - 1)

    def mean_bound(scheduler):
        return variational_bound(unet, scheduler, images, generator=torch.Generator().manual_seed(2),
                                 clip_denoised=False, num_inference_steps=steps, progress=False).bits_per_dim.mean()

    analytic = mean_bound(exact_analytic_scheduler())
    for variance_type in ("fixed_small", "fixed_large"):
        fixed = DDPMFromScratchScheduler(num_train_timesteps=T, clip_sample=False, variance_type=variance_type)
        assert analytic < mean_bound(fixed)


def test_step_has_the_fixed_small_mean_and_sigma_star_noise():
    analytic, fixed = exact_analytic_scheduler(), DDPMFromScratchScheduler(num_train_timesteps=T, clip_sample=False)
    for scheduler in (analytic, fixed):
        scheduler.set_timesteps(10)
    sample, output = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t, s = 90, 80
    mean = fixed.step(output, t, sample, generator=torch.Generator().manual_seed(5)).prev_sample - \
        fixed.posterior_variance(t, s).sqrt() * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    got = analytic.step(output, t, sample, generator=torch.Generator().manual_seed(5)).prev_sample
    sigma = float(np.sqrt(gaussian_reverse_variance(linear_alphas_cumprod(T)[t], linear_alphas_cumprod(T)[s])))
    expected = mean + sigma * torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("gamma", "message"), [
    (None, "needs gamma"),
    ([0.5] * (T - 1), "one value per training timestep"),
    ([0.5] * (T - 1) + [float("nan")], r"gamma\[99\] = nan"),
    ([float("inf")] + [0.5] * (T - 1), r"gamma\[0\] = inf"),
])
def test_bad_gamma_is_refused_naming_it(gamma, message):
    with pytest.raises(ValueError, match=message):
        AnalyticDPMScheduler(gamma=gamma, num_train_timesteps=T)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prediction_type": "sample"}, "prediction_type must be 'epsilon'"),
    ({"variance_type": "learned_range"}, "variance_type"),
])
def test_analytic_scheduler_refuses_what_it_cannot_serve(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnalyticDPMScheduler(gamma=[0.5] * T, num_train_timesteps=T, **kwargs)


def test_analytic_scheduler_from_a_learned_variance_chain_keeps_its_schedule():
    source = DDPMFromScratchScheduler(num_train_timesteps=T, variance_type="learned_range", beta_end=0.03,
                                      timestep_spacing="trailing")
    scheduler = analytic_scheduler(source, [0.5] * T)
    assert scheduler.config.variance_type == "fixed_small"
    assert (scheduler.config.beta_end, scheduler.config.timestep_spacing) == (0.03, "trailing")
    assert torch.equal(scheduler.alphas_cumprod, source.alphas_cumprod)


def test_pipeline_with_the_analytic_scheduler_saves_and_loads(tmp_path):
    pipe = DDPMFromScratchPipeline(unet=GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T),
                                   scheduler=exact_analytic_scheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "analytic")
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path / "analytic")
    assert isinstance(loaded.scheduler, AnalyticDPMScheduler)
    np.testing.assert_array_equal(loaded.scheduler.config.gamma, gaussian_gamma())
    kwargs = {"batch_size": 2, "num_inference_steps": 10, "output_type": "np"}
    first = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    again = loaded(generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_array_equal(first, again)


def test_to_diffusers_says_in_one_line_that_sigma_star_becomes_the_posterior_variance(tiny_pipeline_dir):
    unet = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir).unet
    pipe = DDPMFromScratchPipeline(unet=unet, scheduler=AnalyticDPMScheduler(gamma=[0.5] * 50, num_train_timesteps=50))
    with pytest.warns(UserWarning, match="cannot be expressed in diffusers' DDPMScheduler") as caught:
        exported = pipe.to_diffusers()
    assert "\n" not in str(caught[0].message)
    assert exported.scheduler.config.variance_type == "fixed_small"
    assert "gamma" not in exported.scheduler.config


def test_analytic_variance_script_writes_a_loadable_pipeline(tmp_path, tiny_pipeline_dir):
    from script_modules import load_script

    load_script("analytic_variance").main([str(tiny_pipeline_dir), "--output_dir", str(tmp_path / "out"),
                                           "--num_images", "4", "--quiet"])
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path / "out")
    assert isinstance(loaded.scheduler, AnalyticDPMScheduler)
    assert len(loaded.scheduler.config.gamma) == loaded.scheduler.config.num_train_timesteps
    assert all(np.isfinite(loaded.scheduler.config.gamma))


def test_analytic_variance_script_keeps_the_pipelines_high_snr_prefix(tmp_path, tiny_pipeline_dir):
    from script_modules import load_script

    from ddpm_from_scratch.schedulers.log_snr_schedules import high_snr_prefix_betas

    source = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir)
    betas = high_snr_prefix_betas(40, 13.0, 10).tolist()
    prefixed = DDPMFromScratchPipeline(unet=source.unet, log_snr_prefix_steps=10,
                                       scheduler=DDPMFromScratchScheduler(num_train_timesteps=50, trained_betas=betas))
    prefixed.save_pretrained(tmp_path / "prefixed")
    load_script("analytic_variance").main([str(tmp_path / "prefixed"), "--output_dir", str(tmp_path / "out"),
                                           "--num_images", "2", "--quiet"])
    loaded = DDPMFromScratchPipeline.from_pretrained(tmp_path / "out")
    assert isinstance(loaded.scheduler, AnalyticDPMScheduler)
    assert loaded.log_snr_prefix_steps == 10


def test_pipeline_samples_on_an_explicit_chain_as_set_timesteps_does():
    pipe = DDPMFromScratchPipeline(unet=GaussianOptimalDenoiser(sample_size=4, num_train_timesteps=T),
                                   scheduler=exact_analytic_scheduler())
    pipe.set_progress_bar_config(disable=True)
    chain = optimal_trajectory(pipe.scheduler, 5)
    images = pipe(batch_size=2, timesteps=chain, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert pipe.scheduler.timesteps.tolist() == chain
    sample = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    torch.randn(2, 1, 4, 4, generator=generator)  # x_T, drawn first by the pipeline
    for t in chain:
        sample = pipe.scheduler.step(pipe.unet(sample, t).sample, t, sample, generator=generator).prev_sample
    torch.testing.assert_close(images, (sample / 2 + 0.5).clamp(0, 1))


@pytest.mark.parametrize(("argv", "message"), [
    (["--num_images", "0"], "--num_images must be a positive integer"),
    (["--estimator", "mean"], "invalid choice: 'mean'"),
])
def test_analytic_variance_script_refuses_bad_arguments_by_name(tmp_path, tiny_pipeline_dir, capsys, argv, message):
    from script_modules import load_script

    with pytest.raises(SystemExit) as exit_info:
        load_script("analytic_variance").main([str(tiny_pipeline_dir), "--output_dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
