"""The bound K of the toy problems, over the whole chain, per sequence or per point, in bits.

Sohl-Dickstein et al. (2015) report K, a lower bound on log2 p(x_0); this module returns L = −K,
the same sum of terms as everywhere else in the package (a prior term, one KL per step, the decoder):

* binary sequences: `BinomialDiffusionScheduler`'s Bernoulli terms (`prior_kl`, `vb_term`);
* real-valued points: `likelihood.variational_bound`, the images' chain loop, with the continuous Gaussian
  decoder (`likelihood.continuous_decoder_nll`).

Each term t is estimated with one draw x_t ~ q(x_t | x_0) per sample, through `generator`.
"""

from __future__ import annotations

import math

import torch

from ..likelihood import variational_bound
from ..schedulers.scheduling_binomial import check_binary


@torch.no_grad()
def binomial_negative_bound_bits(model, scheduler, sequences: torch.Tensor,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """L = L_T + Σ_t KL_t + L_0 = −K of each binary sequence, in bits per sequence, ``(B,)`` float64."""
    check_binary(sequences, "sequences")
    total = scheduler.prior_kl(sequences)
    for t in range(scheduler.config.num_train_timesteps):
        noisy = scheduler.add_noise(sequences, t, generator=generator)
        total = total + scheduler.vb_term(model(noisy, t).sample, sequences, noisy, t)
    return total / math.log(2.0)


def binomial_vlb_loss_bits(model_output: torch.Tensor, scheduler, noisy: torch.Tensor, sequences: torch.Tensor,
                           timesteps: torch.Tensor) -> torch.Tensor:
    """T · L_t per sequence in bits (t uniform makes it an unbiased estimate of Σ_t L_t), ``(B,)``."""
    terms = scheduler.vb_term(model_output, sequences, noisy, timesteps)
    return scheduler.config.num_train_timesteps * terms / math.log(2.0)


def point_negative_bound_bits(model, scheduler, points: torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """L = −K of each real-valued point under a Gaussian chain, in bits per point, ``(B,)`` float64.

    The images' bound (`likelihood.variational_bound`, the same chain loop) with x̂_0 unclipped (points are not
    confined to [−1, 1]) and L_0 the Gaussian density of x_0, times the point's dimensions.
    """
    bound = variational_bound(model, scheduler, points, generator, clip_denoised=False, batch_timesteps=1,
                              progress=False, decoder="continuous")
    return bound.bits_per_dim * points[0].numel()
