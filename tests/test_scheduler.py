"""Specification of ddpm_from_scratch.schedulers.scheduling_ddpm.DDPMFromScratchScheduler.

Expected values come from independent sources: diffusers' DDPMScheduler run on the same
config, inputs and generator seed, or closed forms from docs/MATH.md evaluated here in
float64 (Gaussian conjugacy, the laws of total expectation and variance). Nothing is
compared against output recorded from the scheduler itself.
"""

from __future__ import annotations

import inspect
import itertools
import math

import diffusers
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ddpm_from_scratch.schedulers.scheduling_ddpm import (
    DDPMFromScratchScheduler,
    DDPMFromScratchSchedulerOutput,
    betas_for_schedule,
    rescale_zero_terminal_snr,
)

T = 1000
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SPACINGS = ("leading", "trailing", "linspace")
# Clipping / thresholding modes; thresholding with sample_max_value > 1 so it differs from clipping.
X0_MODES = (
    {"clip_sample": True},
    {"clip_sample": False},
    {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
    {"clip_sample": True, "clip_sample_range": 2.0},
)
SHAPE = (2, 3, 4, 4)


@pytest.fixture(autouse=True)
def _seed():
    # Inputs drawn with torch.randn are then the same on every run.
    torch.manual_seed(0)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True)


def diffusers_config(config: dict) -> dict:
    """The diffusers config that ours should reproduce: ours' fixed_large_log samples as fixed_large."""
    if config.get("variance_type") == "fixed_large_log":
        return {**config, "variance_type": "fixed_large"}
    return config


def model_output_for(config: dict, sample: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A stand-in model output of the right shape; the learned types get variance channels."""
    out = torch.randn(sample.shape, generator=gen, dtype=sample.dtype)
    variance_type = config.get("variance_type", "fixed_small")
    if variance_type == "learned":  # σ² itself, positive
        extra = 1e-4 + 0.02 * torch.rand(sample.shape, generator=gen, dtype=sample.dtype)
        out = torch.cat([out, extra], dim=1)
    elif variance_type == "learned_range":  # v in [-1, 1]
        extra = 2 * torch.rand(sample.shape, generator=gen, dtype=sample.dtype) - 1
        out = torch.cat([out, extra], dim=1)
    return out


def run_steps_against_diffusers(config: dict, set_timesteps_kwargs: dict | None, dtype=torch.float32, seed=0):
    """Step both schedulers through their whole chain on shared inputs; return the largest differences.

    Each step gets the same x_t (diffusers' previous output) and model output, and each
    scheduler its own generator seeded alike, so the random draws are compared too.
    """
    ours = DDPMFromScratchScheduler(**config)
    ref = DDPMScheduler(**diffusers_config(config))
    if set_timesteps_kwargs is not None:
        ours.set_timesteps(**set_timesteps_kwargs)
        ref.set_timesteps(**set_timesteps_kwargs)
    assert torch.equal(ours.timesteps, ref.timesteps)
    inputs = torch.Generator().manual_seed(seed)
    gen_ours = torch.Generator().manual_seed(seed + 1)
    gen_ref = torch.Generator().manual_seed(seed + 1)
    sample = torch.randn(SHAPE, generator=inputs, dtype=dtype)
    # In half precision on the CPU diffusers rounds its 0-d float32 coefficients to half before
    # multiplying; ours stay float32. That is one half-precision ulp (2^-11 relative) in a
    # coefficient, which x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t amplifies by up to 1/√ᾱ_t at large t.
    tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
    last = ref.timesteps[-1]
    for t in ref.timesteps:
        model_output = model_output_for(config, sample, inputs)
        got = ours.step(model_output, t, sample, generator=gen_ours)
        if t == last and t > 0:
            gen_ref_before_last = gen_ref.get_state()
        want = ref.step(model_output, t, sample, generator=gen_ref)
        assert got.prev_sample.dtype == want.prev_sample.dtype
        assert_close(got.pred_original_sample, want.pred_original_sample, atol=tol, rtol=tol)
        if t == last and t > 0:
            # Difference 6: into x_0 ours returns the mean, which there is x̂_0 itself (ᾱ_{t'} = 1);
            # diffusers adds noise, one draw more.
            assert_close(got.prev_sample, want.pred_original_sample, atol=tol, rtol=tol)
            gen_ref.set_state(gen_ref_before_last)
        else:
            assert_close(got.prev_sample, want.prev_sample, atol=tol, rtol=tol)
        assert torch.isfinite(got.prev_sample).all()
        sample = want.prev_sample
    # Same number of draws of the same shape: the generators end in the same state.
    assert torch.equal(gen_ours.get_state(), gen_ref.get_state())


def full_chain_configs():
    configs = []
    for i, (variance_type, prediction_type) in enumerate(itertools.product(VARIANCE_TYPES, PREDICTION_TYPES)):
        config = {
            "variance_type": variance_type,
            "prediction_type": prediction_type,
            "beta_schedule": SCHEDULES[i % len(SCHEDULES)],
            **X0_MODES[i % len(X0_MODES)],
        }
        # Zero terminal SNR makes x̂_0 = x_t/√ᾱ_T infinite under ε-prediction; pair it with v/x_0.
        if prediction_type != "epsilon" and i % 2 == 0:
            config["rescale_betas_zero_snr"] = True
        configs.append(config)
    return configs


def respaced_cases():
    cases = []
    for i, (spacing, offset, n) in enumerate(itertools.product(SPACINGS, (0, 1), (50, 13))):
        prediction_type = PREDICTION_TYPES[i % 3]
        config = {
            "timestep_spacing": spacing,
            "steps_offset": offset,
            "variance_type": VARIANCE_TYPES[i % len(VARIANCE_TYPES)],
            "prediction_type": prediction_type,
            "beta_schedule": SCHEDULES[(i // 3) % len(SCHEDULES)],
            "rescale_betas_zero_snr": prediction_type == "v_prediction" and i % 2 == 1,
            **X0_MODES[i % len(X0_MODES)],
        }
        cases.append((config, n))
    return cases


def config_id(config: dict) -> str:
    return "-".join(f"{v}" if not isinstance(v, bool) else (k if v else f"no_{k}") for k, v in config.items())


# ----------------------------------------------------------------------------- step against diffusers


@pytest.mark.parametrize("config", full_chain_configs(), ids=config_id)
def test_step_matches_diffusers_over_the_full_training_chain(config):
    run_steps_against_diffusers(config, None)


@pytest.mark.parametrize(
    ("config", "n"), respaced_cases(), ids=lambda c: config_id(c) if isinstance(c, dict) else str(c)
)
def test_step_matches_diffusers_on_respaced_chains(config, n):
    run_steps_against_diffusers(config, {"num_inference_steps": n})


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_step_matches_diffusers_with_set_timesteps_of_all_training_steps(variance_type):
    run_steps_against_diffusers({"variance_type": variance_type}, {"num_inference_steps": T})


@pytest.mark.parametrize(
    "timesteps",
    [[999, 500, 10, 3, 0], [800, 600, 1], [0], [999]],
    ids=["ends_at_0", "ends_at_1_so_last_step_is_noisy", "only_0", "only_999"],
)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_step_matches_diffusers_on_custom_timesteps(timesteps, variance_type):
    run_steps_against_diffusers({"variance_type": variance_type}, {"timesteps": timesteps})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("config", [{}, {"variance_type": "learned_range", "thresholding": True}], ids=config_id)
def test_step_matches_diffusers_in_other_dtypes(dtype, config):
    run_steps_against_diffusers(config, {"num_inference_steps": 50}, dtype=dtype)


@pytest.mark.parametrize(
    "config", [{}, {"variance_type": "fixed_large", "beta_schedule": "squaredcos_cap_v2"}], ids=config_id
)
def test_closed_loop_sampling_matches_diffusers(config):
    """Each scheduler feeds on its own output for 1000 steps, so differences would accumulate."""
    ours, ref = DDPMFromScratchScheduler(**config), DDPMScheduler(**config)
    x_ours = x_ref = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    gen_ours, gen_ref = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for t in ref.timesteps:
        x_ours = ours.step(0.3 * x_ours, t, x_ours, generator=gen_ours).prev_sample
        x_ref = ref.step(0.3 * x_ref, t, x_ref, generator=gen_ref).prev_sample
    assert_close(x_ours, x_ref)


def test_step_adds_no_noise_and_draws_nothing_at_timestep_zero():
    ours = DDPMFromScratchScheduler(variance_type="fixed_large")
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    x = torch.randn(SHAPE)
    eps = torch.randn(SHAPE)
    first = ours.step(eps, 0, x, generator=gen).prev_sample
    assert torch.equal(gen.get_state(), state)
    second = ours.step(eps, 0, x, generator=torch.Generator().manual_seed(123)).prev_sample
    assert torch.equal(first, second)


def test_step_returns_a_tuple_without_return_dict():
    ours, ref = DDPMFromScratchScheduler(), DDPMScheduler()
    x, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    got = ours.step(eps, 500, x, generator=torch.Generator().manual_seed(0), return_dict=False)
    want = ref.step(eps, 500, x, generator=torch.Generator().manual_seed(0), return_dict=False)
    assert isinstance(got, tuple) and len(got) == 2
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    out = ours.step(eps, 500, x, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, DDPMFromScratchSchedulerOutput)


# ----------------------------------------------------------------------------- timesteps against diffusers


@pytest.mark.parametrize(
    ("spacing", "offset", "n"),
    [
        case
        for case in itertools.product(SPACINGS, (0, 1), (1, 2, 7, 13, 50, 100, 250, 999, 1000))
        # leading + offset 1 + 1000 steps starts at timestep 1000: refused, see
        # test_steps_offset_past_the_last_timestep_is_refused.
        if case != ("leading", 1, 1000)
    ],
)
def test_set_timesteps_matches_diffusers(spacing, offset, n):
    ours = DDPMFromScratchScheduler(timestep_spacing=spacing, steps_offset=offset)
    ref = DDPMScheduler(timestep_spacing=spacing, steps_offset=offset)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert ours.timesteps.dtype == ref.timesteps.dtype == torch.int64
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert ours.num_inference_steps == ref.num_inference_steps == n
    assert ours.custom_timesteps is ref.custom_timesteps is False
    for t in ref.timesteps:
        assert ours.previous_timestep(int(t)) == int(ref.previous_timestep(t))


@pytest.mark.parametrize("n", [61, 103, 121, 397])
def test_trailing_spacing_gives_exactly_n_timesteps_where_diffusers_appends_minus_one(n):
    ours = DDPMFromScratchScheduler(timestep_spacing="trailing")
    ref = DDPMScheduler(timestep_spacing="trailing")
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert len(ours.timesteps) == n
    assert len(ref.timesteps) == n + 1 and int(ref.timesteps[-1]) == -1  # diffusers 0.42's float arange
    assert torch.equal(ours.timesteps, ref.timesteps[:-1])


def test_initial_timesteps_are_the_full_training_chain_as_in_diffusers():
    ours, ref = DDPMFromScratchScheduler(), DDPMScheduler()
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert ours.num_inference_steps is None and ours.custom_timesteps is False
    assert [ours.previous_timestep(t) for t in (999, 1, 0)] == [998, 0, -1]


def test_custom_timesteps_set_custom_flag_and_keep_num_inference_steps_as_diffusers():
    ours, ref = DDPMFromScratchScheduler(), DDPMScheduler()
    for s in (ours, ref):
        s.set_timesteps(20)
        s.set_timesteps(timesteps=[900, 400, 0])
    assert ours.custom_timesteps is ref.custom_timesteps is True
    assert ours.num_inference_steps == ref.num_inference_steps == 20
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert [ours.previous_timestep(t) for t in (900, 400, 0)] == [400, 0, -1]


def test_set_timesteps_puts_timesteps_on_the_given_device():
    ours = DDPMFromScratchScheduler()
    ours.set_timesteps(10, device="cpu")
    assert ours.timesteps.device == torch.device("cpu")


def test_previous_timestep_of_a_batch_matches_the_per_element_answer():
    ours = DDPMFromScratchScheduler(timestep_spacing="trailing")
    ours.set_timesteps(13)
    batch = ours.timesteps[torch.tensor([0, 5, 12, 5])]
    got = ours.previous_timestep(batch)
    assert got.shape == batch.shape
    assert got.tolist() == [ours.previous_timestep(int(t)) for t in batch]


# ----------------------------------------------------------------------------- add_noise, get_velocity


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("rescale", [False, True], ids=["", "zero_snr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_add_noise_and_get_velocity_match_diffusers(schedule, rescale, dtype):
    ours = DDPMFromScratchScheduler(beta_schedule=schedule, rescale_betas_zero_snr=rescale)
    ref = DDPMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=rescale)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 3, 4, 4, generator=gen, dtype=dtype)
    noise = torch.randn(8, 3, 4, 4, generator=gen, dtype=dtype)
    timesteps = torch.tensor([0, 1, 2, 10, 500, 998, 999, 999])
    got = ours.add_noise(x0, noise, timesteps)
    assert got.dtype == dtype
    assert_close(got, ref.add_noise(x0, noise, timesteps))
    assert_close(ours.get_velocity(x0, noise, timesteps), ref.get_velocity(x0, noise, timesteps))


def test_add_noise_accepts_an_int_timestep():
    ours, ref = DDPMFromScratchScheduler(), DDPMScheduler()
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    assert_close(ours.add_noise(x0, noise, 300), ref.add_noise(x0, noise, torch.tensor(300)))


def test_add_noise_of_a_batch_matches_per_sample_calls():
    ours = DDPMFromScratchScheduler()
    x0, noise = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    timesteps = torch.tensor([3, 999, 0, 42])
    batch = ours.add_noise(x0, noise, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        assert torch.equal(batch[i : i + 1], ours.add_noise(x0[i : i + 1], noise[i : i + 1], t))


def test_add_noise_is_the_closed_form_of_q_xt_given_x0():
    ours = DDPMFromScratchScheduler()
    x0, noise = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    timesteps = torch.tensor([0, 250, 999])
    alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, T))[timesteps.numpy()][:, None]
    want = np.sqrt(alphas_cumprod) * x0.numpy() + np.sqrt(1 - alphas_cumprod) * noise.numpy()
    # ᾱ is held in float32 (as in diffusers): 1 − ᾱ_0 = 1e-4 carries a relative error up to 6e-4.
    np.testing.assert_allclose(ours.add_noise(x0, noise, timesteps).numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_add_noise_is_the_one_step_kernel_applied_t_times(schedule):
    # Composing x_t = √(1−β_t) x_{t−1} + √β_t ε_t exactly: the mean coefficient m_t = √(1−β_t) m_{t−1} and the
    # variance v_t = (1−β_t) v_{t−1} + β_t (Gaussian kernels compose in closed form). A kernel with β_t ε in
    # place of √β_t ε would give v_t = (1−β_t) v_{t−1} + β_t², far from 1 − ᾱ_t.
    ours = DDPMFromScratchScheduler(beta_schedule=schedule)
    betas = ours.betas.double().numpy()
    mean_coefficient, variance = np.empty(T), np.empty(T)
    m, v = 1.0, 0.0
    for t in range(T):
        m, v = np.sqrt(1 - betas[t]) * m, (1 - betas[t]) * v + betas[t]
        mean_coefficient[t], variance[t] = m, v
    timesteps = torch.arange(T)
    ones = torch.ones(T, dtype=torch.float64)
    signal = ours.add_noise(ones, torch.zeros(T, dtype=torch.float64), timesteps).numpy()
    noise = ours.add_noise(torch.zeros(T, dtype=torch.float64), ones, timesteps).numpy()
    np.testing.assert_allclose(signal, mean_coefficient, rtol=1e-5)
    np.testing.assert_allclose(noise**2, variance, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=str)
def test_add_noise_in_half_precision_computes_in_float32_where_diffusers_loses_the_noise(half):
    ours, ref = DDPMFromScratchScheduler(), DDPMScheduler()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 4, 4, generator=gen).to(half)
    noise = torch.randn(5, 3, 4, 4, generator=gen).to(half)
    timesteps = torch.arange(5)
    float32_answer = ref.add_noise(x0.float(), noise.float(), timesteps)
    got = ours.add_noise(x0, noise, timesteps)
    assert got.dtype == half
    assert torch.equal(got, float32_answer.to(half))
    # diffusers in half precision: ᾱ_0 = 0.9999 rounds to 1, so at t = 0 the result is x_0 itself.
    ref_half = ref.add_noise(x0, noise, timesteps)
    assert torch.equal(ref_half[0], x0[0])
    assert (ref_half[0].float() - float32_answer[0]).abs().max() > 5e-3


def test_get_velocity_in_half_precision_computes_in_float32():
    ours, ref = DDPMFromScratchScheduler(), DDPMScheduler()
    x0, noise = torch.randn(5, 3, 4, 4).half(), torch.randn(5, 3, 4, 4).half()
    timesteps = torch.arange(5)
    want = ref.get_velocity(x0.float(), noise.float(), timesteps).half()
    assert torch.equal(ours.get_velocity(x0, noise, timesteps), want)


# ----------------------------------------------------------------------------- fixed_large_log


def test_fixed_large_log_samples_are_finite_and_equal_fixed_large():
    log_sched = DDPMFromScratchScheduler(variance_type="fixed_large_log")
    plain = DDPMFromScratchScheduler(variance_type="fixed_large")
    x, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    for t in (999, 500, 1, 0):
        got = log_sched.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        want = plain.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.isfinite(got).all()
        assert torch.equal(got, want)


@pytest.mark.skipif(not diffusers.__version__.startswith("0.42."), reason="documents diffusers 0.42 behaviour")
def test_diffusers_fixed_large_log_is_nan_because_step_takes_the_root_of_a_log_variance():
    ref = DDPMScheduler(variance_type="fixed_large_log")
    log_variance = ref._get_variance(500)
    assert_close(log_variance, torch.log(1 - ref.alphas_cumprod[500] / ref.alphas_cumprod[499]))
    assert log_variance < 0  # so step's variance ** 0.5 is NaN
    x, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    assert torch.isnan(ref.step(eps, 500, x, generator=torch.Generator().manual_seed(0)).prev_sample).all()
    # Not the clamp at t = 0: there nothing is drawn and the result is finite.
    assert torch.isfinite(ref.step(eps, 0, x).prev_sample).all()


# ----------------------------------------------------------------------------- β schedules and ᾱ


def test_scheduler_tensors_equal_diffusers_for_every_schedule():
    for schedule, rescale in itertools.product(SCHEDULES, (False, True)):
        ours = DDPMFromScratchScheduler(beta_schedule=schedule, rescale_betas_zero_snr=rescale)
        ref = DDPMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=rescale)
        for name in ("betas", "alphas", "alphas_cumprod"):
            got, want = getattr(ours, name), getattr(ref, name)
            assert got.dtype == torch.float32, name
            assert_close(got, want, atol=1e-7, rtol=1e-6)


def test_trained_betas_are_used_as_given():
    betas = np.linspace(0.001, 0.2, 10)
    ours = DDPMFromScratchScheduler(num_train_timesteps=10, trained_betas=betas.tolist())
    assert_close(ours.betas, torch.tensor(betas, dtype=torch.float32), atol=0, rtol=0)
    assert_close(ours.alphas_cumprod.double(), torch.tensor(np.cumprod(1 - betas)), atol=1e-7, rtol=1e-6)


def test_linear_betas_are_evenly_spaced_from_beta_start_to_beta_end():
    got = betas_for_schedule("linear", T, 1e-4, 0.02).numpy()
    np.testing.assert_allclose(got, np.linspace(1e-4, 0.02, T), rtol=1e-6)


def test_scaled_linear_betas_have_evenly_spaced_square_roots():
    want = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), T) ** 2
    np.testing.assert_allclose(betas_for_schedule("scaled_linear", T, 0.00085, 0.012).numpy(), want, rtol=1e-5)


def test_sigmoid_betas_follow_a_sigmoid_from_beta_start_to_beta_end():
    u = np.linspace(-6, 6, T)
    want = 1e-4 + (0.02 - 1e-4) / (1 + np.exp(-u))
    np.testing.assert_allclose(betas_for_schedule("sigmoid", T, 1e-4, 0.02).numpy(), want, rtol=1e-5)


def test_cosine_betas_follow_the_math_md_alpha_bar():
    s = 0.008

    def f(t):
        return math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2

    alpha_bar = [f(t) / f(0) for t in range(T + 1)]  # paper indexing, ᾱ(0) = 1
    want = [min(1 - alpha_bar[t] / alpha_bar[t - 1], 0.999) for t in range(1, T + 1)]
    np.testing.assert_allclose(betas_for_schedule("squaredcos_cap_v2", T).numpy(), want, rtol=1e-6)
    assert max(want) == 0.999  # the cap is reached


def test_rescale_zero_terminal_snr_zeroes_the_last_alpha_bar_and_keeps_the_first():
    betas = betas_for_schedule("scaled_linear", T, 0.00085, 0.012).double()
    rescaled = rescale_zero_terminal_snr(betas)
    sqrt_ac, sqrt_new = torch.cumprod(1 - betas, 0).sqrt(), torch.cumprod(1 - rescaled, 0).sqrt()
    assert sqrt_new[-1].abs() < 1e-12
    assert_close(sqrt_new[0], sqrt_ac[0], atol=1e-12, rtol=0)
    # √ᾱ' is an affine function of √ᾱ: shift to 0 at T, scale to keep the first value.
    want = (sqrt_ac - sqrt_ac[-1]) * sqrt_ac[0] / (sqrt_ac[0] - sqrt_ac[-1])
    assert_close(sqrt_new, want, atol=1e-10, rtol=1e-8)


def test_alpha_bar_of_a_batch_is_the_cumulative_product_of_alphas():
    ours = DDPMFromScratchScheduler()
    timesteps = torch.tensor([0, 7, 999])
    want = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)[timesteps]
    assert_close(ours.alpha_bar(timesteps).double(), want, atol=1e-7, rtol=1e-5)
    assert ours.alpha_bar(7).shape == ()
    assert ours.alpha_bar(timesteps, like=torch.zeros(3, 2, 5, 5)).shape == (3, 1, 1, 1)


# ----------------------------------------------------------------------------- x_0, ε and v


def test_predict_start_from_noise_inverts_add_noise():
    ours = DDPMFromScratchScheduler()
    x0, noise = torch.randn(4, 3, 4, 4, dtype=torch.float64), torch.randn(4, 3, 4, 4, dtype=torch.float64)
    timesteps = torch.tensor([0, 10, 500, 999])
    xt = ours.add_noise(x0, noise, timesteps)
    assert_close(ours.predict_start_from_noise(xt, noise, timesteps), x0, atol=1e-9, rtol=1e-9)
    assert_close(ours.predict_noise_from_start(xt, x0, timesteps), noise, atol=1e-9, rtol=1e-9)


def test_predict_start_from_velocity_inverts_get_velocity():
    ours = DDPMFromScratchScheduler()
    x0, noise = torch.randn(4, 3, 4, 4, dtype=torch.float64), torch.randn(4, 3, 4, 4, dtype=torch.float64)
    timesteps = torch.tensor([0, 10, 500, 999])
    xt = ours.add_noise(x0, noise, timesteps)
    v = ours.get_velocity(x0, noise, timesteps)
    assert_close(ours.predict_start_from_velocity(xt, v, timesteps), x0, atol=1e-9, rtol=1e-9)


def test_q_mean_variance_is_sqrt_alpha_bar_x0_and_one_minus_alpha_bar():
    ours = DDPMFromScratchScheduler()
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    timesteps = torch.tensor([5, 999])
    ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)[timesteps].view(2, 1, 1, 1)
    mean, variance, log_variance = ours.q_mean_variance(x0, timesteps)
    assert_close(mean, ac.sqrt() * x0, atol=1e-7, rtol=1e-5)
    assert_close(variance, 1 - ac, atol=1e-7, rtol=1e-5)
    assert_close(log_variance, torch.log(1 - ac), atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- the posterior q(x_{t-1} | x_t, x_0)


def f64_chain(ours, timesteps, prev_timesteps):
    """ᾱ_t, ᾱ_{t'} (1 before the first step), α'_t and β'_t in float64 from the scheduler's ᾱ."""
    ac = ours.alphas_cumprod.double()
    ac_t = ac[timesteps]
    ac_prev = torch.where(prev_timesteps >= 0, ac[prev_timesteps.clamp(min=0)], torch.ones_like(ac_t))
    alpha = ac_t / ac_prev
    return ac_t, ac_prev, alpha, 1 - alpha


CHAINS = {
    "training": (torch.tensor([1, 2, 10, 500, 998, 999]), None),
    "respaced": (torch.tensor([999, 979, 500, 20, 7]), torch.tensor([979, 500, 20, 0, 3])),
}


@pytest.mark.parametrize("chain", CHAINS)
def test_posterior_variance_is_the_bayes_posterior_precision(chain):
    """1/β̃_t = α'_t/β'_t + 1/(1 − ᾱ_{t'}): the precisions of q(x_t|x_{t'}) and q(x_{t'}|x_0) add."""
    ours = DDPMFromScratchScheduler()
    timesteps, prev = CHAINS[chain]
    prev_or_default = timesteps - 1 if prev is None else prev
    ac_t, ac_prev, alpha, beta = f64_chain(ours, timesteps, prev_or_default)
    like = torch.zeros(len(timesteps), dtype=torch.float64)
    got = ours.posterior_variance(timesteps, prev, like=like)
    assert_close(1 / got, alpha / beta + 1 / (1 - ac_prev), atol=0, rtol=1e-10)
    # In float32 the same up to the cancellation in β'_t = 1 − ᾱ_t/ᾱ_{t'}: an error of one float32
    # ulp in the ratio (6e-8) is relatively 6e-8/β'_t, up to 6e-4 for β' = 1e-4.
    assert_close(ours.posterior_variance(timesteps, prev).double(), got, atol=0, rtol=1e-3)


@pytest.mark.parametrize("chain", CHAINS)
def test_posterior_mean_is_the_precision_weighted_mean(chain):
    """μ̃ = β̃ (√α'_t x_t / β'_t + √ᾱ_{t'} x_0 / (1 − ᾱ_{t'})) by Gaussian conjugacy."""
    ours = DDPMFromScratchScheduler()
    timesteps, prev = CHAINS[chain]
    prev_or_default = timesteps - 1 if prev is None else prev
    ac_t, ac_prev, alpha, beta = f64_chain(ours, timesteps, prev_or_default)
    b = len(timesteps)
    x0, xt = torch.randn(b, 3, 2, 2, dtype=torch.float64), torch.randn(b, 3, 2, 2, dtype=torch.float64)
    shape = (b, 1, 1, 1)
    var = (1 / (alpha / beta + 1 / (1 - ac_prev))).view(shape)
    from_xt = alpha.sqrt().view(shape) * xt / beta.view(shape)
    from_x0 = ac_prev.sqrt().view(shape) * x0 / (1 - ac_prev).view(shape)
    want = var * (from_xt + from_x0)
    assert_close(ours.posterior_mean(x0, xt, timesteps, prev), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("chain", CHAINS)
def test_posterior_mean_from_x0_equals_its_epsilon_form(chain):
    """With x_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t: μ̃ = (x_t − β'_t/√(1 − ᾱ_t) ε) / √α'_t (MATH.md)."""
    ours = DDPMFromScratchScheduler()
    timesteps, prev = CHAINS[chain]
    prev_or_default = timesteps - 1 if prev is None else prev
    ac_t, ac_prev, alpha, beta = f64_chain(ours, timesteps, prev_or_default)
    b = len(timesteps)
    shape = (b, 1, 1, 1)
    xt, eps = torch.randn(b, 3, 2, 2), torch.randn(b, 3, 2, 2)
    want = (xt.double() - (beta / (1 - ac_t).sqrt()).view(shape) * eps.double()) / alpha.sqrt().view(shape)
    x0 = ours.predict_start_from_noise(xt, eps, timesteps)
    assert_close(ours.posterior_mean(x0, xt, timesteps, prev).double(), want, atol=1e-4, rtol=1e-4)
    x0_64 = ours.predict_start_from_noise(xt.double(), eps.double(), timesteps)
    assert_close(ours.posterior_mean(x0_64, xt.double(), timesteps, prev), want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("chain", CHAINS)
def test_posterior_marginalises_back_to_q_x_prev_given_x0(chain):
    """Averaging q(x_{t'}|x_t,x_0) over x_t ~ q(x_t|x_0) gives q(x_{t'}|x_0) = N(√ᾱ_{t'} x_0, 1 − ᾱ_{t'}).

    μ̃ = c1 x_0 + c2 x_t, so (total expectation) c1 + c2 √ᾱ_t = √ᾱ_{t'} and (total variance)
    c2² (1 − ᾱ_t) + β̃_t = 1 − ᾱ_{t'}.
    """
    ours = DDPMFromScratchScheduler(beta_schedule="squaredcos_cap_v2")
    timesteps, prev = CHAINS[chain]
    prev_or_default = timesteps - 1 if prev is None else prev
    ac_t, ac_prev, _, _ = f64_chain(ours, timesteps, prev_or_default)
    ones = torch.ones(len(timesteps), dtype=torch.float64)
    c1 = ours.posterior_mean(ones, 0 * ones, timesteps, prev)
    c2 = ours.posterior_mean(0 * ones, ones, timesteps, prev)
    assert_close(c1 + c2 * ac_t.sqrt(), ac_prev.sqrt(), atol=1e-12, rtol=1e-10)
    variance = ours.posterior_variance(timesteps, prev, like=ones)
    assert_close(c2**2 * (1 - ac_t) + variance, 1 - ac_prev, atol=1e-12, rtol=1e-10)


def test_posterior_at_timestep_zero_is_x0_with_zero_variance():
    ours = DDPMFromScratchScheduler()
    x0, xt = torch.randn(SHAPE), torch.randn(SHAPE)
    mean, variance, log_variance = ours.q_posterior_mean_variance(x0, xt, 0)
    assert_close(mean, x0, atol=1e-7, rtol=0)
    assert float(variance) == 0.0
    assert math.isclose(float(log_variance), math.log(1e-20), rel_tol=1e-6)


def test_explicit_previous_timesteps_of_the_training_chain_equal_the_default():
    ours = DDPMFromScratchScheduler()
    timesteps = torch.tensor([0, 1, 500, 999])
    x0, xt = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    assert torch.equal(ours.posterior_mean(x0, xt, timesteps, timesteps - 1), ours.posterior_mean(x0, xt, timesteps))
    for name in ("posterior_variance", "posterior_log_variance"):
        assert torch.equal(getattr(ours, name)(timesteps, timesteps - 1), getattr(ours, name)(timesteps)), name


def test_batched_posterior_matches_per_element_calls():
    ours = DDPMFromScratchScheduler()
    timesteps, prev = torch.tensor([999, 500, 3, 0]), torch.tensor([900, 499, 0, -1])
    x0, xt = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    mean, variance, log_variance = ours.q_posterior_mean_variance(x0, xt, timesteps, prev)
    for i in range(4):
        m, v, lv = ours.q_posterior_mean_variance(x0[i : i + 1], xt[i : i + 1], timesteps[i : i + 1], prev[i : i + 1])
        assert torch.equal(mean[i : i + 1], m)
        assert torch.equal(variance[i : i + 1], v) and torch.equal(log_variance[i : i + 1], lv)
    for i, t in enumerate([999, 500, 3, 0]):  # int timesteps on the training chain
        assert torch.equal(ours.posterior_variance(t), ours.posterior_variance(torch.tensor([t]))[0])


# ----------------------------------------------------------------------------- the reverse process p_θ


def test_model_mean_under_epsilon_prediction_is_the_math_md_form():
    """μ_θ = (x_t − β_t/√(1 − ᾱ_t) · ε_θ) / √α_t, without clipping."""
    ours = DDPMFromScratchScheduler(clip_sample=False)
    timesteps = torch.tensor([1, 50, 999])
    xt, eps = torch.randn(3, 3, 2, 2, dtype=torch.float64), torch.randn(3, 3, 2, 2, dtype=torch.float64)
    ac_t, _, alpha, beta = f64_chain(ours, timesteps, timesteps - 1)
    shape = (3, 1, 1, 1)
    want = (xt - (beta / (1 - ac_t).sqrt()).view(shape) * eps) / alpha.sqrt().view(shape)
    assert_close(ours.model_mean(eps, xt, timesteps), want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_model_mean_is_the_posterior_mean_at_the_predicted_x0(prediction_type):
    ours = DDPMFromScratchScheduler(prediction_type=prediction_type, clip_sample=False)
    timesteps = torch.tensor([10, 999])
    x0, eps = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    xt = ours.add_noise(x0, eps, timesteps)
    velocity = ours.get_velocity(x0, eps, timesteps)
    exact_output = {"epsilon": eps, "sample": x0, "v_prediction": velocity}[prediction_type]
    out = ours.p_mean_variance(exact_output, xt, timesteps)
    assert_close(out.pred_original_sample, x0, atol=1e-8, rtol=1e-8)
    assert_close(out.mean, ours.posterior_mean(x0, xt, timesteps), atol=1e-8, rtol=1e-8)


def test_model_mean_clips_the_predicted_x0_as_configured():
    ours = DDPMFromScratchScheduler(prediction_type="sample", clip_sample=True, clip_sample_range=1.0)
    xt = torch.zeros(1, 1, 1, 1)
    big = torch.full((1, 1, 1, 1), 5.0)
    assert float(ours.p_mean_variance(big, xt, 10).pred_original_sample) == 1.0
    assert float(ours.p_mean_variance(big, xt, 10, clip_denoised=False).pred_original_sample) == 5.0


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
def test_model_variance_per_variance_type(variance_type):
    ours = DDPMFromScratchScheduler(variance_type=variance_type)
    timesteps, prev = torch.tensor([999, 500, 20, 7]), torch.tensor([979, 480, 0, -1])
    ac_t, ac_prev, alpha, beta = f64_chain(ours, timesteps, prev)
    beta_tilde = ((1 - ac_prev) / (1 - ac_t) * beta).clamp(min=1e-20)
    shape = (4, 1, 1, 1)
    v = 2 * torch.rand(4, 3, 2, 2, dtype=torch.float64) - 1 if variance_type == "learned_range" else None
    if variance_type == "learned":
        v = 1e-4 + torch.rand(4, 3, 2, 2, dtype=torch.float64) / 50
    want = {
        "fixed_small": beta_tilde.view(shape),
        "fixed_small_log": beta_tilde.view(shape),
        "fixed_large": beta.view(shape),
        "fixed_large_log": beta.view(shape),
        "learned": v,
        "learned_range": None if v is None else torch.exp(
            (v + 1) / 2 * beta.log().view(shape) + (1 - v) / 2 * beta_tilde.log().view(shape)
        ),
    }[variance_type]
    like = torch.zeros(4, 3, 2, 2, dtype=torch.float64)
    got = ours.model_variance(timesteps, v, prev, like=like)
    assert_close(got.expand_as(like), want.expand_as(like), atol=1e-15, rtol=1e-9)
    log_got = ours.model_log_variance(timesteps, v, prev, like=like)
    assert_close(log_got.expand_as(like), want.log().expand_as(like), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned", "learned_range"])
def test_step_is_the_model_mean_plus_model_std_times_the_generators_draw(variance_type):
    config = {"variance_type": variance_type, "timestep_spacing": "trailing"}
    ours = DDPMFromScratchScheduler(**config)
    ours.set_timesteps(13)
    x = torch.randn(SHAPE)
    for t in ours.timesteps[[0, 6, 12]].tolist():
        model_output = model_output_for(config, x, torch.Generator().manual_seed(t))
        out = ours.step(model_output, t, x, generator=torch.Generator().manual_seed(7))
        batch_t = torch.full((SHAPE[0],), t)
        params = ours.p_mean_variance(model_output, x, batch_t, ours.previous_timestep(batch_t))
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
        want = params.mean + (params.variance.sqrt() * z if ours.previous_timestep(t) >= 0 else 0)
        assert_close(out.prev_sample, want)
        assert_close(out.pred_original_sample, params.pred_original_sample)


def test_respaced_step_uses_beta_prime_from_the_alpha_bar_ratio():
    """fixed_large's σ² on a respaced chain is β'_t = 1 − ᾱ_t/ᾱ_{t'}, not β_t."""
    ours = DDPMFromScratchScheduler(variance_type="fixed_large", clip_sample=False, prediction_type="sample")
    ours.set_timesteps(timesteps=[999, 500, 0])
    x0 = torch.zeros(1, 1, 200, 200)  # x̂_0 = 0 and x_t = 0: the step is pure noise
    out = ours.step(x0, 500, x0, generator=torch.Generator().manual_seed(0)).prev_sample
    ac = ours.alphas_cumprod.double()
    beta_prime = 1 - ac[500] / ac[0]
    assert math.isclose(out.std().item(), beta_prime.sqrt().item(), rel_tol=0.02)
    z = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    assert_close(out, (beta_prime.sqrt() * z).float())


# ----------------------------------------------------------------------------- scheduler protocol


def test_scheduler_constants_match_diffusers():
    ours, ref = DDPMFromScratchScheduler(num_train_timesteps=50), DDPMScheduler(num_train_timesteps=50)
    assert len(ours) == len(ref) == 50
    assert ours.order == ref.order == 1
    assert ours.init_noise_sigma == ref.init_noise_sigma == 1.0
    x = torch.randn(SHAPE)
    assert ours.scale_model_input(x, 3) is x


def test_config_keys_and_defaults_are_diffusers_ddpm_schedulers():
    ours = inspect.signature(DDPMFromScratchScheduler.__init__).parameters
    ref = inspect.signature(DDPMScheduler.__init__).parameters
    assert list(ours) == list(ref)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in ref.items()}


def test_compatibles_are_diffusers_scheduler_classes():
    assert "DDPMScheduler" in DDPMFromScratchScheduler._compatibles
    for name in DDPMFromScratchScheduler._compatibles:
        assert hasattr(diffusers, name), name
    assert DDIMScheduler in DDPMFromScratchScheduler().compatibles


# ----------------------------------------------------------------------------- round trips

NON_DEFAULT = {
    "num_train_timesteps": 500,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "variance_type": "learned_range",
    "clip_sample": False,
    "prediction_type": "v_prediction",
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.9,
    "clip_sample_range": 2.0,
    "sample_max_value": 1.5,
    "timestep_spacing": "trailing",
    "steps_offset": 1,
    "rescale_betas_zero_snr": True,
}
OUR_KEYS = list(inspect.signature(DDPMFromScratchScheduler.__init__).parameters)[1:]


def our_keys(config) -> dict:
    return {k: config[k] for k in OUR_KEYS}


def test_save_pretrained_then_from_pretrained_restores_the_scheduler(tmp_path):
    ours = DDPMFromScratchScheduler(**NON_DEFAULT)
    ours.save_pretrained(tmp_path)
    loaded = DDPMFromScratchScheduler.from_pretrained(tmp_path)
    assert our_keys(loaded.config) == our_keys(ours.config)
    assert torch.equal(loaded.alphas_cumprod, ours.alphas_cumprod)


def test_trained_betas_survive_a_save_and_load(tmp_path):
    ours = DDPMFromScratchScheduler(num_train_timesteps=4, trained_betas=[0.1, 0.2, 0.3, 0.4])
    ours.save_pretrained(tmp_path)
    loaded = DDPMFromScratchScheduler.from_pretrained(tmp_path)
    assert torch.equal(loaded.betas, ours.betas)


def test_a_config_saved_by_diffusers_loads_in_ours(tmp_path):
    DDPMScheduler(**NON_DEFAULT).save_pretrained(tmp_path)
    loaded = DDPMFromScratchScheduler.from_pretrained(tmp_path)
    assert our_keys(loaded.config) == NON_DEFAULT | {"trained_betas": None}
    assert_close(loaded.alphas_cumprod, DDPMScheduler(**NON_DEFAULT).alphas_cumprod, atol=1e-7, rtol=1e-6)


def test_a_config_saved_by_ours_loads_in_diffusers(tmp_path):
    DDPMFromScratchScheduler(**NON_DEFAULT).save_pretrained(tmp_path)
    loaded = DDPMScheduler.from_pretrained(tmp_path)
    assert our_keys(loaded.config) == NON_DEFAULT | {"trained_betas": None}


def test_config_round_trips_through_ddim_scheduler():
    ours = DDPMFromScratchScheduler(**NON_DEFAULT)
    ddim = DDIMScheduler.from_config(ours.config)
    back = DDPMFromScratchScheduler.from_config(ddim.config)
    assert our_keys(back.config) == our_keys(ours.config)


# ----------------------------------------------------------------------------- refused configurations


def test_unknown_beta_schedule_is_refused():
    with pytest.raises(ValueError, match="beta_schedule.*'cubic'"):
        DDPMFromScratchScheduler(beta_schedule="cubic")


def test_unknown_variance_type_is_refused():
    with pytest.raises(ValueError, match="variance_type.*'tiny'"):
        DDPMFromScratchScheduler(variance_type="tiny")


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type.*'score'"):
        DDPMFromScratchScheduler(prediction_type="score")


def test_unknown_timestep_spacing_is_refused():
    with pytest.raises(ValueError, match="timestep_spacing.*'random'"):
        DDPMFromScratchScheduler(timestep_spacing="random")


@pytest.mark.parametrize("beta_start", [0.0, -0.1, 1.0])
def test_beta_start_outside_zero_one_is_refused(beta_start):
    with pytest.raises(ValueError, match="beta_start"):
        DDPMFromScratchScheduler(beta_start=beta_start)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "sigmoid"])
def test_beta_end_outside_zero_one_is_refused(schedule):
    with pytest.raises(ValueError, match="beta_end"):
        DDPMFromScratchScheduler(beta_schedule=schedule, beta_end=1.5)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
def test_beta_end_below_beta_start_is_refused(schedule):
    with pytest.raises(ValueError, match="beta_end.*beta_start"):
        DDPMFromScratchScheduler(beta_schedule=schedule, beta_start=0.02, beta_end=0.0001)


@pytest.mark.parametrize(
    "bad", [0.0, 1.0, -0.5, float("nan"), 1 - 1e-9], ids=["zero", "one", "negative", "nan", "one_in_float32"]
)
def test_trained_betas_outside_zero_one_are_refused(bad):
    with pytest.raises(ValueError, match="trained_betas"):
        DDPMFromScratchScheduler(num_train_timesteps=3, trained_betas=[0.1, bad, 0.2])


def test_zero_terminal_snr_betas_given_as_trained_betas_rescale_to_themselves():
    rescaled = DDPMFromScratchScheduler(beta_schedule="scaled_linear", rescale_betas_zero_snr=True)
    assert rescaled.betas[-1].item() == 1.0
    again = DDPMFromScratchScheduler(trained_betas=rescaled.betas.tolist(), rescale_betas_zero_snr=True)
    ref = DDPMScheduler(trained_betas=rescaled.betas.tolist(), rescale_betas_zero_snr=True)
    torch.testing.assert_close(again.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    torch.testing.assert_close(again.alphas_cumprod, rescaled.alphas_cumprod, rtol=1e-5, atol=1e-9)


def test_a_last_beta_of_one_is_refused_without_zero_terminal_snr():
    with pytest.raises(ValueError, match=r"trained_betas must all lie in \(0, 1\)"):
        DDPMFromScratchScheduler(num_train_timesteps=3, trained_betas=[0.1, 0.2, 1.0])


@pytest.mark.parametrize("betas", [[1.0, 0.2, 0.3], [0.1, 1.0, 0.3]], ids=["first", "middle"])
def test_a_beta_of_one_before_the_last_is_refused_even_with_zero_terminal_snr(betas):
    with pytest.raises(ValueError, match="trained_betas"):
        DDPMFromScratchScheduler(num_train_timesteps=3, trained_betas=betas, rescale_betas_zero_snr=True)


def test_trained_betas_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match="trained_betas.*num_train_timesteps=1000"):
        DDPMFromScratchScheduler(trained_betas=[0.1, 0.2])


@pytest.mark.parametrize("value", [0, -5])
def test_num_train_timesteps_below_one_is_refused(value):
    with pytest.raises(ValueError, match="num_train_timesteps"):
        DDPMFromScratchScheduler(num_train_timesteps=value)


def test_negative_steps_offset_is_refused():
    with pytest.raises(ValueError, match="steps_offset"):
        DDPMFromScratchScheduler(steps_offset=-1)


def test_dynamic_thresholding_ratio_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="dynamic_thresholding_ratio"):
        DDPMFromScratchScheduler(dynamic_thresholding_ratio=1.5)


def test_more_inference_steps_than_training_steps_are_refused():
    with pytest.raises(ValueError, match="num_inference_steps.*1001"):
        DDPMFromScratchScheduler().set_timesteps(1001)


def test_zero_inference_steps_are_refused():
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDPMFromScratchScheduler().set_timesteps(0)


@pytest.mark.parametrize("timesteps", [[10, 20, 0], [10, 10, 0]], ids=["ascending", "repeated"])
def test_custom_timesteps_not_strictly_descending_are_refused(timesteps):
    with pytest.raises(ValueError, match="timesteps must be strictly descending"):
        DDPMFromScratchScheduler().set_timesteps(timesteps=timesteps)


@pytest.mark.parametrize("timesteps", [[1000, 5], [5, -1]], ids=["too_large", "negative"])
def test_custom_timesteps_out_of_range_are_refused(timesteps):
    with pytest.raises(ValueError, match="timesteps must lie in"):
        DDPMFromScratchScheduler().set_timesteps(timesteps=timesteps)


def test_both_num_inference_steps_and_timesteps_are_refused():
    with pytest.raises(ValueError, match="num_inference_steps or timesteps"):
        DDPMFromScratchScheduler().set_timesteps(10, timesteps=[5, 0])


def test_neither_num_inference_steps_nor_timesteps_is_refused():
    with pytest.raises(ValueError, match="num_inference_steps or timesteps"):
        DDPMFromScratchScheduler().set_timesteps()


def test_steps_offset_past_the_last_timestep_is_refused():
    with pytest.raises(ValueError, match="steps_offset=1"):
        DDPMFromScratchScheduler(steps_offset=1).set_timesteps(1000)


def test_step_at_a_timestep_off_the_chain_is_refused():
    ours = DDPMFromScratchScheduler()
    ours.set_timesteps(10)
    with pytest.raises(ValueError, match="timestep 5 is not on the current chain"):
        ours.step(torch.randn(SHAPE), 5, torch.randn(SHAPE))


def test_learned_variance_without_variance_channels_is_refused():
    ours = DDPMFromScratchScheduler(variance_type="learned_range")
    with pytest.raises(ValueError, match="variance_type='learned_range'"):
        ours.step(torch.randn(SHAPE), 500, torch.randn(SHAPE))


# ----------------------------------------------------------------------------- learned_range on respaced chains


def respaced_learned_range_log_variance(ac_t, ac_prev, v):
    """MATH.md's f_Σ for the step t → t' in float64: f = (v + 1)/2, β'_t = 1 − ᾱ_t/ᾱ_{t'},
    β̃'_t = max((1 − ᾱ_{t'})/(1 − ᾱ_t) · β'_t, 1e-20), log σ² = f log β'_t + (1 − f) log β̃'_t."""
    beta = 1 - ac_t / ac_prev
    tilde = ((1 - ac_prev) / (1 - ac_t) * beta).clamp(min=1e-20)
    frac = (v + 1) / 2
    return frac * beta.log() + (1 - frac) * tilde.log()


def chain_pairs(ours):
    """(t, t', ᾱ_t, ᾱ_{t'}) of every step of the current chain, ᾱ in float64 from the scheduler's float32
    ᾱ table (ᾱ_{−1} = 1 after the last step)."""
    ts = ours.timesteps.to(torch.long)
    prev = torch.cat([ts[1:], torch.tensor([-1])])
    ac = ours.alphas_cumprod.double()
    ac_prev = torch.where(prev >= 0, ac[prev.clamp(min=0)], torch.ones(len(prev), dtype=torch.float64))
    return ts, prev, ac[ts], ac_prev


LEARNED_RESPACINGS = [("leading", 50), ("leading", 13), ("trailing", 50), ("trailing", 13)]


@pytest.mark.parametrize(("spacing", "n"), LEARNED_RESPACINGS)
def test_learned_range_step_noise_std_on_a_respaced_chain_uses_the_chains_own_beta(spacing, n):
    """The noise std of a learned_range step t → t' is exp(½ log σ²), log σ² = f log β'_t + (1 − f) log β̃'_t,
    f = (v + 1)/2, with β'_t = 1 − ᾱ_t/ᾱ_{t'} and β̃'_t = (1 − ᾱ_{t'})/(1 − ᾱ_t) β'_t of the respaced chain.

    The std is measured without knowing the mean: two steps on the same input with generators seeded a and
    b give x_a − x_b = σ (z_a − z_b), z reproduced by torch.randn of the ε-part's shape and dtype (diffusers'
    randn_tensor on the CPU). Expected σ in float64 from the scheduler's ᾱ table. The training chain's
    β_t (ᾱ_{t−1} in place of ᾱ_{t'}) gives a σ that is off by more than a factor e^0.5 somewhere on the chain.
    """
    ours = DDPMFromScratchScheduler(variance_type="learned_range", timestep_spacing=spacing)
    ours.set_timesteps(n)
    ts, prev, ac_t, ac_prev = chain_pairs(ours)
    ac = ours.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(0)
    largest_training_chain_error = 0.0
    for i, t in enumerate(ts.tolist()):
        x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
        model_output = torch.cat([torch.randn(SHAPE, generator=gen, dtype=torch.float64),
                                  2 * torch.rand(SHAPE, generator=gen, dtype=torch.float64) - 1], dim=1)
        v = model_output[:, SHAPE[1]:]
        a, b = 2 * i, 2 * i + 1
        x_a = ours.step(model_output, t, x, generator=torch.Generator().manual_seed(a)).prev_sample
        x_b = ours.step(model_output, t, x, generator=torch.Generator().manual_seed(b)).prev_sample
        if prev[i] < 0:  # the last step of every chain adds no noise (difference 6)
            assert torch.equal(x_a, x_b)
            continue
        z_a, z_b = (torch.randn(SHAPE, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (a, b))
        measured = (x_a - x_b) / (z_a - z_b)
        want = torch.exp(0.5 * respaced_learned_range_log_variance(ac_t[i], ac_prev[i], v))
        # step's coefficients are float32 (as diffusers'): β'_t = 1 − a ratio of float32 ᾱ, ~3e-5 relative
        # where β'_t is smallest (the step into timestep 0).
        assert_close(measured, want, rtol=1e-4, atol=0)

        training = torch.exp(0.5 * respaced_learned_range_log_variance(ac_t[i], ac[t - 1], v))
        largest_training_chain_error = max(largest_training_chain_error, (training / want).log().abs().max().item())
    assert largest_training_chain_error > 0.5


@pytest.mark.parametrize(("spacing", "n"), LEARNED_RESPACINGS)
def test_model_log_variance_with_the_chains_prev_timesteps_is_the_respaced_interpolation(spacing, n):
    """model_log_variance(t, v, prev_timesteps=t') for all steps of a set_timesteps chain at once equals
    f log β'_t + (1 − f) log max(β̃'_t, 1e-20), f = (v + 1)/2, computed here in float64."""
    ours = DDPMFromScratchScheduler(variance_type="learned_range", timestep_spacing=spacing)
    ours.set_timesteps(n)
    ts, prev, ac_t, ac_prev = chain_pairs(ours)
    shape = (len(ts), 1, 1, 1)
    v = 2 * torch.rand(len(ts), 3, 2, 2, dtype=torch.float64) - 1
    want = respaced_learned_range_log_variance(ac_t.view(shape), ac_prev.view(shape), v)
    got = ours.model_log_variance(ts, v, prev_timesteps=prev)
    # float64 tables from the same float32 ᾱ: agreement to rounding (the t' = −1 row is log 1e-20 ≈ −46).
    assert_close(got, want, rtol=1e-9, atol=1e-9)
    # The default prev_timesteps is the training chain's t − 1: another answer where the chain skips steps.
    training = ours.model_log_variance(ts, v)
    assert (training - want).abs().max().item() > 0.5


@pytest.mark.parametrize(("spacing", "n"), LEARNED_RESPACINGS)
def test_diffusers_learned_range_variance_on_respaced_chains_is_the_respaced_interpolation(spacing, n):
    """diffusers' DDPMScheduler._get_variance (the log σ² its step uses for learned_range) takes β'_t and
    β̃'_t of the chain's step t → previous_timestep(t), so it is an independent reference here; ours agrees."""
    ours = DDPMFromScratchScheduler(variance_type="learned_range", timestep_spacing=spacing)
    ref = DDPMScheduler(variance_type="learned_range", timestep_spacing=spacing)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    ts, prev, ac_t, ac_prev = chain_pairs(ours)
    v = 2 * torch.rand(3, 2, 2) - 1
    for i, t in enumerate(ts.tolist()):
        want = respaced_learned_range_log_variance(ac_t[i], ac_prev[i], v.double())
        theirs = ref._get_variance(t, predicted_variance=v)
        mine = ours.model_log_variance(t, v, prev_timesteps=int(prev[i]))
        # float32 throughout; log β'_t of a float32 ratio of ᾱ: ~1e-5 relative at worst.
        assert_close(theirs.double(), want, rtol=1e-5, atol=1e-5)
        assert_close(mine.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [50, 13])
def test_learned_range_step_matches_diffusers_on_leading_respaced_chains(n):
    """respaced_cases covers learned_range only for trailing/linspace spacing under v-prediction."""
    config = {"variance_type": "learned_range", "timestep_spacing": "leading"}
    run_steps_against_diffusers(config, {"num_inference_steps": n})


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log",
                                           "learned", "learned_range"])
@pytest.mark.parametrize("respaced", [False, True], ids=["training-chain", "respaced"])
def test_get_variance_returns_what_diffusers_returns(variance_type, respaced):
    ours, theirs = DDPMFromScratchScheduler(), DDPMScheduler()
    if respaced:
        ours.set_timesteps(50)
        theirs.set_timesteps(50)
    predicted = torch.tensor([[-0.3, 0.7]])
    for t in ([999, 500, 21, 1, 0] if not respaced else theirs.timesteps[[0, 10, 48, 49]].tolist()):
        want = theirs._get_variance(t, predicted_variance=predicted, variance_type=variance_type)
        got = ours._get_variance(t, predicted_variance=predicted, variance_type=variance_type)
        torch.testing.assert_close(torch.as_tensor(got, dtype=torch.float32), want.float(), rtol=2e-5, atol=1e-12)


def test_get_variance_refuses_an_unknown_variance_type():
    with pytest.raises(ValueError, match="variance_type must be one of"):
        DDPMFromScratchScheduler()._get_variance(3, variance_type="fixed")


def test_threshold_sample_under_diffusers_name_matches_diffusers():
    x = 3 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    config = dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.5)
    want = DDPMScheduler(**config)._threshold_sample(x)
    torch.testing.assert_close(DDPMFromScratchScheduler(**config)._threshold_sample(x), want)


@pytest.mark.parametrize(("config", "n"), [({"timestep_spacing": "trailing"}, 50), ({"steps_offset": 1}, 10)])
def test_the_last_step_of_a_chain_ending_above_zero_returns_the_mean_as_algorithm_2(config, n):
    ours = DDPMFromScratchScheduler(variance_type="fixed_large", **config)
    ours.set_timesteps(n)
    t = int(ours.timesteps[-1])
    assert t > 0
    x, model_output = torch.randn(SHAPE), torch.randn(SHAPE)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out = ours.step(model_output, t, x, generator=generator)
    assert_close(out.prev_sample, ours.p_mean_variance(model_output, x, t, -1).mean)
    assert torch.equal(generator.get_state(), state)  # nothing drawn
