"""Pictures of the chains: the arrays each figure draws are checked against the theory, not pixels."""

import math

import numpy as np
import pytest
import torch
from analytic_models import linear_alphas_cumprod
from script_modules import load_script

from ddpm_from_scratch import DDPMFromScratchPipeline, DDPMFromScratchScheduler
from ddpm_from_scratch.figures.chain import (
    FIGURE_FILES,
    bound_figure,
    figure_timesteps,
    forward_process_figure,
    reverse_chain,
    reverse_process_figure,
    schedule_figure,
)
from ddpm_from_scratch.likelihood import variational_bound


def cosine_betas(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021), eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2), β ≤ 0.999."""
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - f[1:] / f[:-1], 0.999)


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def drawn(figure) -> list[np.ndarray]:
    """The array each image panel shows, row by row."""
    return [np.asarray(ax.images[0].get_array()) for ax in figure.axes if ax.images]


def test_the_figure_timesteps_are_the_issue_list_for_1000_steps_and_scale_with_t():
    assert figure_timesteps(1000) == [0, 50, 100, 250, 500, 750, 999]
    assert figure_timesteps(50) == [0, 2, 5, 12, 25, 37, 49]


def test_the_schedule_figure_draws_linear_and_cosine_from_their_definitions():
    T = 1000
    figure = schedule_figure(DDPMFromScratchScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2"))
    beta_ax, alpha_ax, snr_ax = figure.axes[:3]
    assert beta_ax.get_yscale() == "log"
    betas = lines_by_label(beta_ax)
    np.testing.assert_allclose(betas["linear"].get_ydata(), np.linspace(1e-4, 0.02, T), rtol=1e-6)
    np.testing.assert_allclose(betas["cosine"].get_ydata(), cosine_betas(T), rtol=1e-5)
    # The pipeline's own schedule comes first and here is the cosine one.
    np.testing.assert_allclose(betas["this pipeline (squaredcos_cap_v2)"].get_ydata(), cosine_betas(T), rtol=1e-5)
    alpha_bar = linear_alphas_cumprod(T)
    np.testing.assert_allclose(lines_by_label(alpha_ax)["linear"].get_ydata(), alpha_bar, rtol=1e-6)
    # ᾱ is stored in float32: its relative error ~1e-7 becomes ~1e-7 / (1 − ᾱ) in log SNR near t = 0.
    np.testing.assert_allclose(lines_by_label(snr_ax)["linear"].get_ydata(), np.log(alpha_bar / (1 - alpha_bar)),
                               rtol=1e-4, atol=1e-5)


def test_the_forward_figure_draws_the_data_then_draws_from_q_xt_given_x0():
    scheduler = DDPMFromScratchScheduler()
    c = 0.5
    image = torch.full((1, 1, 48, 48), c)
    figure = forward_process_figure(scheduler, image, generator=torch.Generator().manual_seed(0))
    panels = drawn(figure)
    assert len(panels) == 1 + 7
    np.testing.assert_array_equal(panels[0], image[0, 0].numpy())
    alpha_bar = linear_alphas_cumprod(1000)
    n = image.numel()
    for panel, t in zip(panels[1:], [0, 50, 100, 250, 500, 750, 999]):
        mean, std = math.sqrt(alpha_bar[t]) * c, math.sqrt(1 - alpha_bar[t])
        # x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε over 2,304 independent pixels: mean and spread within 5 standard errors.
        assert abs(panel.mean() - mean) < 5 * std / math.sqrt(n), t
        assert abs(panel.std() - std) < 5 * std / math.sqrt(2 * n), t


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline_dir):
    pipe = DDPMFromScratchPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_reverse_figure_draws_x_t_and_the_networks_x0_estimate_from_it(pipeline):
    figure = reverse_process_figure(pipeline, num_images=2, generator=torch.Generator().manual_seed(3))
    timesteps = figure_timesteps(50)[::-1]  # columns follow the chain: t = T−1 first
    panels = drawn(figure)
    assert len(panels) == 2 * 2 * len(timesteps)
    alpha_bar = linear_alphas_cumprod(50)
    columns = len(timesteps)
    for image in range(2):
        x_row = panels[(2 * image) * columns:(2 * image + 1) * columns]
        x0_row = panels[(2 * image + 1) * columns:(2 * image + 2) * columns]
        for x_t, x0_hat, t in zip(x_row, x0_row, timesteps):
            sample = torch.from_numpy(x_t.astype(np.float32))[None, None]
            with torch.no_grad():
                eps = pipeline.unet(sample, t).sample.double()
            want = ((sample.double() - math.sqrt(1 - alpha_bar[t]) * eps) / math.sqrt(alpha_bar[t])).clamp(-1, 1)
            np.testing.assert_allclose(x0_hat, want[0, 0].numpy(), atol=1e-4)


def test_the_reverse_chain_ends_in_the_pipelines_own_samples(pipeline):
    _, _, final = reverse_chain(pipeline, 3, [0, 49], generator=torch.Generator().manual_seed(5))
    images = pipeline(batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=50,
                      output_type="pt").images
    torch.testing.assert_close((final / 2 + 0.5).clamp(0, 1), images)


def test_the_bound_figure_draws_each_timesteps_term_with_l0_and_lt_marked(pipeline):
    grid = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    images = grid[torch.randint(0, 256, (4, 1, 8, 8), generator=torch.Generator().manual_seed(0))]
    figure = bound_figure(pipeline, images, generator=torch.Generator().manual_seed(1), progress=False)
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    bound = variational_bound(pipeline.unet, pipeline.scheduler, images, generator=torch.Generator().manual_seed(1),
                              progress=False)
    terms = bound.terms_bits_per_dim.mean(0).numpy()
    curve, decoder, prior = ax.get_lines()
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(1, 50))
    np.testing.assert_allclose(curve.get_ydata(), terms[1:], rtol=1e-12)
    assert decoder.get_label().startswith("L_0") and decoder.get_ydata()[0] == pytest.approx(terms[0])
    assert prior.get_label().startswith("L_T") and prior.get_xdata()[0] == 50
    assert prior.get_ydata()[0] == pytest.approx(bound.prior_bits_per_dim.mean().item())
    # What is drawn adds up to the bound: L_T + L_0 + Σ KL terms = bits/dim.
    drawn_total = prior.get_ydata()[0] + decoder.get_ydata()[0] + curve.get_ydata().sum()
    assert drawn_total == pytest.approx(bound.bits_per_dim.mean().item(), rel=1e-9)


def test_the_explain_script_writes_the_four_pngs(tmp_path, tiny_pipeline_dir):
    paths = load_script("explain").main([str(tiny_pipeline_dir), "--output_dir", str(tmp_path / "explain"),
                                         "--num_bound_images", "3", "--num_reverse_images", "1", "--quiet"])
    assert sorted(p.name for p in (tmp_path / "explain").iterdir()) == sorted(FIGURE_FILES.values())
    assert all(path.stat().st_size > 0 for path in paths.values())


def test_the_explain_script_needs_images_for_a_model_that_is_not_a_digits_model(tmp_path, capsys):
    from ddpm_from_scratch import DDPMFromScratchUNet

    unet = DDPMFromScratchUNet(sample_size=16, in_channels=3, out_channels=3, base_channels=8,
                               channel_multipliers=(1,), num_res_blocks=1, attention_levels=(), norm_num_groups=4)
    DDPMFromScratchPipeline(unet=unet, scheduler=DDPMFromScratchScheduler(num_train_timesteps=10)).save_pretrained(
        tmp_path / "rgb")
    with pytest.raises(SystemExit) as exit_:
        load_script("explain").main([str(tmp_path / "rgb"), "--output_dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--images" in capsys.readouterr().err
