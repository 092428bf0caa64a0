"""The variational bound against closed forms computed here, in float64, from the schedule alone.

Models whose reverse steps are known exactly (the true noise, zero noise, a constant variance)
make each term of the bound a formula of β_t and ᾱ_t; the tests recompute the schedule with numpy
rather than asking the scheduler under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from ddpm_from_scratch import DDPMFromScratchScheduler, DDPMFromScratchUNet
from ddpm_from_scratch.likelihood import (
    MIN_PROBABILITY,
    check_images,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_bits_per_dim,
    variational_bound,
    vb_terms_bits_per_dim,
)

LN2 = math.log(2.0)
T_SHORT, BETA_START, BETA_END_SHORT = 20, 5e-3, 0.2  # a short chain that still moves: ᾱ_19 ≈ 0.12
# The scheduler stores ᾱ_t in float32, as diffusers does, so 1 − ᾱ_t at small t (hence β̃_1) carries a
# relative error of ~1e-5 here (~5e-4 for β_0 = 1e-4): closed forms that depend on it get this tolerance.
RTOL_SCHEDULE = 1e-4


# ----------------------------------------------------------------------------- closed forms (float64)


def schedule(num_timesteps: int, beta_start: float, beta_end: float) -> dict[str, np.ndarray]:
    """β_t, α_t, ᾱ_t and β̃_t (t ≥ 1; β̃_0 = 0) of the linear schedule, 0-indexed like diffusers."""
    betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.append(1.0, abar[:-1])
    return {"betas": betas, "alphas": alphas, "abar": abar, "tilde_betas": (1 - abar_prev) / (1 - abar) * betas}


def grid_images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images k/127.5 − 1 (float64), with both extreme bins present in every image."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 256, size=(batch, channels, size, size))
    k[:, 0, 0, 0], k[:, 0, 0, 1] = 0, 255
    return torch.from_numpy(k / 127.5 - 1)


def exact_decoder_bits_per_dim(images: torch.Tensor, variance: float) -> np.ndarray:
    """−log₂ of the N(x_0, variance) mass of each pixel's own bin, per image, over the dimensions.

    Interior bin [x − 1/255, x + 1/255] centred on the mean: erf(h/(σ√2)); an outer bin, open on one side:
    ½(1 + erf(h/(σ√2))).
    """
    x = images.double().numpy()
    centre = math.erf((1 / 255) / math.sqrt(2 * variance))
    p = np.where(np.abs(x) > 0.999, 0.5 * (1 + centre), centre)
    return -np.log(p).reshape(len(x), -1).sum(1) / (x[0].size * LN2)


def prior_closed_form_bits_per_dim(images: torch.Tensor, abar_last: float) -> np.ndarray:
    """KL(N(√ᾱ x_0, 1 − ᾱ) ‖ N(0, 1)) = ½(ᾱ x_0² + (1 − ᾱ) − 1 − log(1 − ᾱ)) per dim, in bits per dim."""
    x = images.double().numpy().reshape(len(images), -1)
    kl = 0.5 * (abar_last * x**2 - abar_last - math.log1p(-abar_last))
    return kl.sum(1) / (x.shape[1] * LN2)


# ----------------------------------------------------------------------------- models with known outputs


class ExactModel(torch.nn.Module):
    """Returns the exact ε (or x_0, or v) of x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for the images it was given.

    It knows x_0, so ε = (x_t − √ᾱ_t x_0)/√(1 − ᾱ_t); rows come stacked timestep-major (row j·B + i is
    image i), which `variational_bound` documents. ᾱ_t is the scheduler's own, so ε is exact to rounding.
    """

    def __init__(self, images: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        super().__init__()
        self.images, self.abar, self.prediction_type = images, alphas_cumprod.double(), prediction_type

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> UNet2DOutput:
        x0 = self.images.double().repeat(sample.shape[0] // self.images.shape[0], 1, 1, 1)
        abar = self.abar[timestep].reshape(-1, 1, 1, 1)
        eps = (sample.double() - abar.sqrt() * x0) / (1 - abar).sqrt()
        out = {"epsilon": eps, "sample": x0, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * x0}
        return UNet2DOutput(sample=out[self.prediction_type].to(sample.dtype))


class ZeroNoiseModel(torch.nn.Module):
    """ε_θ = 0, optionally followed by a constant learned_range output v (2C channels)."""

    def __init__(self, range_value: float | None = None):
        super().__init__()
        self.range_value = range_value

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> UNet2DOutput:
        out = torch.zeros_like(sample)
        if self.range_value is not None:
            out = torch.cat([out, torch.full_like(sample, self.range_value)], dim=1)
        return UNet2DOutput(sample=out)


def short_scheduler(**kwargs) -> DDPMFromScratchScheduler:
    kwargs = {"num_train_timesteps": T_SHORT, "beta_start": BETA_START, "beta_end": BETA_END_SHORT, **kwargs}
    return DDPMFromScratchScheduler(**kwargs)


def bound(model, scheduler, images, seed=0, **kwargs):
    return variational_bound(
        model, scheduler, images, generator=torch.Generator().manual_seed(seed), progress=False, **kwargs
    )


# ----------------------------------------------------------------------------- the Gaussian pieces


def test_normal_kl_matches_its_closed_form():
    m1, v1, m2, v2 = 0.3, 0.5, -0.2, 2.0
    expected = 0.5 * (math.log(v2 / v1) + v1 / v2 + (m1 - m2) ** 2 / v2 - 1)
    got = normal_kl(torch.tensor(m1, dtype=torch.float64), math.log(v1), m2, math.log(v2))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    same = normal_kl(torch.tensor([0.7]), torch.tensor([-3.0]), torch.tensor([0.7]), torch.tensor([-3.0]))
    assert same.item() == 0.0


def test_discretized_likelihood_matches_erf():
    x = torch.tensor([-1.0, 20 / 127.5 - 1, 1.0], dtype=torch.float64)
    mean, sigma = 0.1, 0.3
    got = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), math.log(sigma)).exp().tolist()

    def cdf(z):
        return 0.5 * (1 + math.erf((z - mean) / (sigma * math.sqrt(2))))

    h = 1 / 255
    expected = [cdf(-1 + h), cdf(x[1].item() + h) - cdf(x[1].item() - h), 1 - cdf(1 - h)]
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mean", [-1.3, -1.0, -1 + 1 / 255, -0.999, 0.0, 0.25, 1 / 255, 0.999, 1.0, 1.4])
@pytest.mark.parametrize("log_scale", [math.log(s) for s in (1e-8, 1e-4, 1e-2, 0.3, 1.0, 1e3, 1e7)])
def test_bin_probabilities_sum_to_one(mean, log_scale):
    # Every bin of the grid against one Gaussian; the 1e-12 floor adds at most 256e-12.
    bins = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    log_p = discretized_gaussian_log_likelihood(bins, torch.full_like(bins, mean), log_scale)
    assert torch.isfinite(log_p).all()
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_far_tails_keep_precision_then_floor():
    # A bin 10σ above the mean: mass ≈ φ(10)·(2/255)/σ·…, tiny but above the floor; Φ would round it to 0
    # in the right tail, log-space keeps it. A bin 100σ away is floored at 1e-12.
    sigma = 1e-3
    x = torch.tensor([10 / 127.5 - 1], dtype=torch.float64)
    mean = x - 1 / 255 - 6 * sigma  # the bin starts 6σ above the mean
    lower, upper = 6.0, 6.0 + (2 / 255) / sigma
    expected = math.log(0.5 * math.erfc(lower / math.sqrt(2)) - 0.5 * math.erfc(upper / math.sqrt(2)))
    got = discretized_gaussian_log_likelihood(x, mean, math.log(sigma)).item()
    assert got == pytest.approx(expected, rel=1e-10)
    far = discretized_gaussian_log_likelihood(x, x - 100 * sigma, math.log(sigma)).item()
    assert far == pytest.approx(math.log(MIN_PROBABILITY))


# ----------------------------------------------------------------------------- the prior


@pytest.mark.parametrize("num_timesteps,beta_end", [(T_SHORT, BETA_END_SHORT), (1000, 0.02)])
def test_prior_matches_closed_form(num_timesteps, beta_end):
    images = grid_images(3, 2, 4)
    scheduler = DDPMFromScratchScheduler(num_train_timesteps=num_timesteps, beta_start=BETA_START, beta_end=beta_end)
    abar_last = schedule(num_timesteps, BETA_START, beta_end)["abar"][-1]
    expected = prior_closed_form_bits_per_dim(images, abar_last)
    # The scheduler's ᾱ is a float32 cumulative product: relative error ~T·6e-8.
    np.testing.assert_allclose(prior_bits_per_dim(scheduler, images).numpy(), expected, rtol=1e-4)


# ----------------------------------------------------------------------------- exact models: closed forms


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_exact_noise_gives_zero_kl_and_the_analytic_decoder_fixed_small(prediction_type):
    images = grid_images(3, 2, 4)
    scheduler = short_scheduler(prediction_type=prediction_type)
    model = ExactModel(images, scheduler.alphas_cumprod, prediction_type)
    out = bound(model, scheduler, images)
    s = schedule(T_SHORT, BETA_START, BETA_END_SHORT)

    assert out.terms_bits_per_dim.shape == (3, T_SHORT)
    assert out.terms_bits_per_dim[:, 1:].abs().max().item() < 1e-12
    # The decoder's σ² at timestep 0 is β̃ of timestep 1 (Ho et al. / improved-diffusion).
    decoder = exact_decoder_bits_per_dim(images, s["tilde_betas"][1])
    np.testing.assert_allclose(out.decoder_bits_per_dim.numpy(), decoder, rtol=RTOL_SCHEDULE)
    prior = prior_closed_form_bits_per_dim(images, s["abar"][-1])
    np.testing.assert_allclose(out.bits_per_dim.numpy(), prior + decoder, rtol=RTOL_SCHEDULE)


def test_exact_noise_under_fixed_large_leaves_only_the_variance_mismatch():
    # Δμ = 0, so each KL is the variance term ½(r − 1 − log r) per dim, r = β̃_t/β_t, exactly.
    images = grid_images(2, 1, 4)
    scheduler = short_scheduler(variance_type="fixed_large")
    out = bound(ExactModel(images, scheduler.alphas_cumprod), scheduler, images)
    s = schedule(T_SHORT, BETA_START, BETA_END_SHORT)
    r = s["tilde_betas"][1:] / s["betas"][1:]
    expected = 0.5 * (r - 1 - np.log(r)) / LN2
    np.testing.assert_allclose(out.terms_bits_per_dim[:, 1:].numpy(), np.tile(expected, (2, 1)), rtol=RTOL_SCHEDULE)
    # improved-diffusion's fixed_large decoder also uses β̃ of timestep 1.
    np.testing.assert_allclose(
        out.decoder_bits_per_dim.numpy(), exact_decoder_bits_per_dim(images, s["tilde_betas"][1]), rtol=RTOL_SCHEDULE
    )


def test_exact_noise_over_a_thousand_steps_in_float32():
    images = grid_images(2, 3, 8).float()
    scheduler = DDPMFromScratchScheduler()  # T = 1000, linear 1e-4 … 0.02, fixed_small
    out = bound(ExactModel(images, scheduler.alphas_cumprod), scheduler, images)
    s = schedule(1000, 1e-4, 0.02)
    assert out.terms_bits_per_dim[:, 1:].abs().sum(-1).max().item() < 1e-6
    decoder = exact_decoder_bits_per_dim(images, s["tilde_betas"][1])
    np.testing.assert_allclose(out.decoder_bits_per_dim.numpy(), decoder, rtol=1e-4)
    prior = prior_closed_form_bits_per_dim(images, s["abar"][-1])
    np.testing.assert_allclose(out.bits_per_dim.numpy(), prior + decoder, rtol=1e-4)


# ----------------------------------------------------------------------------- ε_θ = 0: expectations


def zero_noise_expectation(variance_type: str, dims: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the batch mean of each KL column (t ≥ 1), bits per dim, for ε_θ = 0.

    Unclipped, x̂_0 = x_t/√ᾱ_t, so μ̃_t − μ_θ = β_t ε / (√α_t √(1 − ᾱ_t)) and per image
    KL = β_t² ‖ε‖² / (2σ_t² α_t (1 − ᾱ_t)) + D · ½(r − 1 − log r), r = β̃_t/σ_t²,
    with ‖ε‖² ~ χ²_D: mean D, variance 2D.
    """
    s = schedule(T_SHORT, BETA_START, BETA_END_SHORT)
    beta, alpha, abar, tilde = (s[k][1:] for k in ("betas", "alphas", "abar", "tilde_betas"))
    sigma2 = tilde if variance_type == "fixed_small" else beta
    c = beta**2 / (2 * sigma2 * alpha * (1 - abar))
    r = tilde / sigma2
    mean = (c + 0.5 * (r - 1 - np.log(r))) / LN2
    stderr = c * math.sqrt(2 * dims) / (dims * LN2) / math.sqrt(batch)
    return mean, stderr


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_zero_noise_kl_terms_match_their_expectation(variance_type):
    batch, channels, size = 64, 3, 8
    images = grid_images(batch, channels, size).float()
    out = bound(ZeroNoiseModel(), short_scheduler(variance_type=variance_type), images, seed=1, clip_denoised=False)
    expected, stderr = zero_noise_expectation(variance_type, channels * size * size, batch)
    measured = out.terms_bits_per_dim[:, 1:].mean(0).numpy()
    z = (measured - expected) / stderr
    assert np.abs(z).max() < 5, f"z-scores {np.round(z, 2)}"
    total_z = (measured.sum() - expected.sum()) / math.sqrt((stderr**2).sum())
    assert abs(total_z) < 5


def test_learned_range_endpoints_are_the_fixed_variances():
    images = grid_images(4, 1, 4).float()
    small = bound(ZeroNoiseModel(), short_scheduler(variance_type="fixed_small"), images, clip_denoised=False)
    large = bound(ZeroNoiseModel(), short_scheduler(variance_type="fixed_large"), images, clip_denoised=False)
    lower = bound(ZeroNoiseModel(-1.0), short_scheduler(variance_type="learned_range"), images, clip_denoised=False)
    upper = bound(ZeroNoiseModel(1.0), short_scheduler(variance_type="learned_range"), images, clip_denoised=False)
    # v = −1 is β̃ everywhere, the decoder's β̃_1 included; v = +1 is β_t for t ≥ 1 (the decoder keeps β_0).
    torch.testing.assert_close(lower.terms_bits_per_dim, small.terms_bits_per_dim, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(upper.terms_bits_per_dim[:, 1:], large.terms_bits_per_dim[:, 1:], rtol=1e-5, atol=1e-9)


def test_learned_range_without_variance_channels_is_refused():
    images = grid_images(1, 1, 4).float()
    with pytest.raises(ValueError, match="learned_range"):
        bound(ZeroNoiseModel(), short_scheduler(variance_type="learned_range"), images)


# ----------------------------------------------------------------------------- bookkeeping


@pytest.fixture(scope="module")
def tiny_unet() -> DDPMFromScratchUNet:
    torch.manual_seed(0)
    unet = DDPMFromScratchUNet(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        base_channels=8,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        norm_num_groups=4,
    )
    return unet.eval()


def test_total_is_prior_plus_terms(tiny_unet):
    images = grid_images(3, 1, 8).float()
    out = bound(tiny_unet, short_scheduler(), images)
    assert out.bits_per_dim.shape == out.prior_bits_per_dim.shape == out.decoder_bits_per_dim.shape == (3,)
    torch.testing.assert_close(out.bits_per_dim, out.prior_bits_per_dim + out.terms_bits_per_dim.sum(-1))
    assert torch.equal(out.decoder_bits_per_dim, out.terms_bits_per_dim[:, 0])
    assert (out.terms_bits_per_dim[:, 1:] >= 0).all() and (out.decoder_bits_per_dim > 0).all()


def test_same_generator_same_bound_other_seed_other_draws(tiny_unet):
    images = grid_images(2, 1, 8).float()
    first, again = (
        bound(tiny_unet, short_scheduler(), images, seed=5),
        bound(tiny_unet, short_scheduler(), images, seed=5),
    )
    other = bound(tiny_unet, short_scheduler(), images, seed=6)
    assert torch.equal(first.terms_bits_per_dim, again.terms_bits_per_dim)
    assert not torch.equal(first.terms_bits_per_dim, other.terms_bits_per_dim)
    torch.testing.assert_close(first.prior_bits_per_dim, other.prior_bits_per_dim)  # the prior has no draw


@pytest.mark.parametrize("batch_timesteps", [3, 7, None])
def test_batching_timesteps_matches_one_at_a_time(tiny_unet, batch_timesteps):
    images = grid_images(2, 1, 8).float()
    one = bound(tiny_unet, short_scheduler(), images, batch_timesteps=1)
    many = bound(tiny_unet, short_scheduler(), images, batch_timesteps=batch_timesteps)
    torch.testing.assert_close(many.terms_bits_per_dim, one.terms_bits_per_dim, rtol=1e-5, atol=1e-7)


def test_progress_bar_can_be_shown(capsys):
    images = grid_images(1, 1, 4).float()
    variational_bound(ZeroNoiseModel(), short_scheduler(), images, progress=True)
    assert "variational bound" in capsys.readouterr().err


def test_values_a_rounding_error_off_the_grid_are_snapped():
    images = grid_images(2, 1, 4)
    nudged = (images + 1e-4 / 127.5).float()
    torch.testing.assert_close(check_images(nudged), images.float())


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.zeros(1, 4, 4), "shape"),
        (torch.full((1, 1, 4, 4), 1.5), r"\[-1, 1\]"),
        (torch.full((1, 1, 4, 4), 0.003), "8-bit grid"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), "floating point"),
        (torch.full((1, 1, 4, 4), float("nan")), "NaN"),
    ],
)
def test_bad_images_are_refused(images, message):
    with pytest.raises(ValueError, match=message):
        variational_bound(ZeroNoiseModel(), short_scheduler(), images, progress=False)


def test_non_tensor_images_are_refused():
    with pytest.raises(TypeError, match="torch.Tensor"):
        variational_bound(ZeroNoiseModel(), short_scheduler(), np.zeros((1, 1, 4, 4)), progress=False)


def test_bad_settings_are_refused():
    images = grid_images(1, 1, 4).float()
    with pytest.raises(ValueError, match="num_train_timesteps >= 2"):
        variational_bound(ZeroNoiseModel(), DDPMFromScratchScheduler(num_train_timesteps=1), images, progress=False)
    with pytest.raises(ValueError, match="batch_timesteps"):
        variational_bound(ZeroNoiseModel(), short_scheduler(), images, batch_timesteps=0, progress=False)


# ----------------------------------------------------------------------------- a learned variance (learned_range)


def exact_noise_rows(scheduler, timesteps: list[int], v: float, dtype: torch.dtype):
    """(model_output, x_t, x_0, timesteps) for one term per row: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε built here in
    float64 from the scheduler's ᾱ, and a model output [ε, v] (2C channels) with the very ε that made x_t."""
    x0 = grid_images(1, 2, 4).repeat(len(timesteps), 1, 1, 1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor(timesteps)
    abar = scheduler.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    sample = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    model_output = torch.cat([noise, torch.full_like(noise, v)], dim=1)
    return model_output.to(dtype), sample.to(dtype), x0.to(dtype), t


LEARNED_TIMESTEPS = [1, 2, 10, T_SHORT - 1]  # t ≥ 1: KL terms (t = 0 is the decoder)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_learned_range_exact_noise_and_v_minus_one_have_zero_kl(dtype):
    """v = −1 gives σ_t² = β̃_t and the exact ε gives μ_θ = μ̃_t: p_θ is the posterior, every KL (t ≥ 1) is 0."""
    scheduler = short_scheduler(variance_type="learned_range")
    model_output, sample, x0, t = exact_noise_rows(scheduler, LEARNED_TIMESTEPS, -1.0, dtype)
    terms = vb_terms_bits_per_dim(scheduler, model_output, sample, x0, t, clip_denoised=False)
    assert terms.shape == (len(LEARNED_TIMESTEPS),)
    assert terms.abs().max().item() < 1e-6


@pytest.mark.parametrize("v", [1.0, 0.3, -0.6])
def test_learned_range_exact_noise_pays_only_the_variance_kl(v):
    """With the exact ε the means agree, so KL(N(μ̃, β̃_t) ‖ N(μ̃, σ_t²)) = ½(log(σ_t²/β̃_t) + β̃_t/σ_t² − 1)
    per dimension, with log σ_t² = f log β_t + (1 − f) log β̃_t, f = (v + 1)/2; at v = +1 that is
    ½(log(β_t/β̃_t) + β̃_t/β_t − 1). Bits per dim: the per-dimension nats / ln 2.

    β_t = 1 − ᾱ_t/ᾱ_{t−1} and β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t in float64 from the scheduler's float32 ᾱ
    table cast to float64 (the table diffusers also uses), so the agreement is to float64 rounding.
    """
    scheduler = short_scheduler(variance_type="learned_range")
    model_output, sample, x0, t = exact_noise_rows(scheduler, LEARNED_TIMESTEPS, v, torch.float64)
    terms = vb_terms_bits_per_dim(scheduler, model_output, sample, x0, t, clip_denoised=False).numpy()

    abar = scheduler.alphas_cumprod.double().numpy()
    ts = np.array(LEARNED_TIMESTEPS)
    beta = 1 - abar[ts] / abar[ts - 1]
    tilde = (1 - abar[ts - 1]) / (1 - abar[ts]) * beta
    frac = (v + 1) / 2
    log_ratio = frac * np.log(beta / tilde)  # log(σ²/β̃)
    expected = 0.5 * (log_ratio + np.exp(-log_ratio) - 1) / LN2
    assert (expected > 1e-6).all()  # a variance mismatch that the check can see
    np.testing.assert_allclose(terms, expected, rtol=1e-7)


def test_learned_range_v_zero_is_the_geometric_mean_variance_in_the_bound():
    """ε_θ = 0 with v = 0 everywhere: σ_t² = exp(½ log β_t + ½ log β̃_t) = √(β_t β̃_t), the geometric mean.

    Unclipped, x̂_0 = x_t/√ᾱ_t, so μ̃_t − μ_θ = β_t ε / (√α_t √(1 − ᾱ_t)) for the ε that made x_t, and per image
    KL = Σ_dims β_t² ε² / (2σ_t² α_t (1 − ᾱ_t)) + D · ½(log(σ_t²/β̃_t) + β̃_t/σ_t² − 1),
    with log(σ_t²/β̃_t) = ½ log(β_t/β̃_t) and β̃_t/σ_t² = √(β̃_t/β_t). The ε are `variational_bound`'s own draws,
    reproduced from the documented order (one (B, C, H, W) torch.randn per timestep, t = T−1 down to 0).
    The schedule is the numpy float64 one; an arithmetic-mean variance would give a visibly different bound.
    """
    images = grid_images(2, 2, 4)
    out = bound(ZeroNoiseModel(0.0), short_scheduler(variance_type="learned_range"), images, seed=3,
                clip_denoised=False)
    gen = torch.Generator().manual_seed(3)
    draws = [torch.randn(images.shape, generator=gen, dtype=torch.float64) for _ in range(T_SHORT)]
    eps_sq = np.stack([draws[T_SHORT - 1 - t].numpy().reshape(len(images), -1) for t in range(1, T_SHORT)], 1) ** 2

    s = schedule(T_SHORT, BETA_START, BETA_END_SHORT)
    beta, alpha, abar, tilde = (s[k][1:] for k in ("betas", "alphas", "abar", "tilde_betas"))
    dims = eps_sq.shape[-1]

    def kl_bits(sigma2):
        mean_term = (beta**2 / (2 * sigma2 * alpha * (1 - abar)))[None, :, None] * eps_sq
        variance_term = 0.5 * (np.log(sigma2 / tilde) + tilde / sigma2 - 1)
        return (mean_term.sum(-1) + dims * variance_term) / (dims * LN2)

    geometric = kl_bits(np.sqrt(beta * tilde))
    np.testing.assert_allclose(out.terms_bits_per_dim[:, 1:].numpy(), geometric, rtol=RTOL_SCHEDULE)
    arithmetic = kl_bits((beta + tilde) / 2)
    assert np.abs(arithmetic / geometric - 1).max() > 100 * RTOL_SCHEDULE
