# Copyright 2025 The ddpm-from-scratch authors. Licensed under the Apache License, Version 2.0.
"""Binomial diffusion of binary data, written from Sohl-Dickstein et al. (2015), Appendix B.2.

The forward kernel is T_π(x_t | x_{t−1}; β_t) = B(x_t; x_{t−1}(1 − β_t) + p β_t) for each bit, whose
equilibrium π is Bernoulli(p) (``stationary_probability``). The reverse kernel has the same form,
p(x_{t−1} | x_t) = B(x_{t−1}; f_b(x_t, t)), with f_b given by a network, and every term of the bound
is a KL divergence between Bernoullis.

This module is shipped verbatim inside Hub repositories, so it imports only numpy, torch and
diffusers.

Indexing. As in ``scheduling_ddpm``: papers count steps t = 1..T, this module counts timesteps
0..T−1 (``betas[i] = β_{i+1}``, ``alphas_cumprod[i] = ᾱ_{i+1}``). ``t'`` is the timestep the reverse
step goes to (``t − 1`` on the training chain, the next entry of ``timesteps`` on a respaced chain)
and ᾱ_{t'} = 1 when t' = −1, the data. Every per-step quantity depends on ᾱ_t and ᾱ_{t'} only:
composing binomial kernels gives a binomial kernel, with α'_t = ᾱ_t / ᾱ_{t'} in place of 1 − β_t.

Bits are 0/1 floats of any shape (B, ...); each position diffuses independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

BINOMIAL_BETA_SCHEDULES = ("sohl-dickstein",)
BINOMIAL_PREDICTION_TYPES = ("sample", "reverse_probability")
# Probabilities are kept this far from 0 and 1 inside logarithms: a KL of exactly 0 vs 1 is infinite.
PROBABILITY_EPS = 1e-12


@dataclass
class BinomialDiffusionSchedulerOutput(BaseOutput):
    """Output of [`BinomialDiffusionScheduler.step`].

    Args:
        prev_sample (`torch.Tensor`, same shape as the sample):
            x_{t'} ~ B(f_b(x_t, t)), 0/1 floats.
        reverse_probability (`torch.Tensor`, same shape):
            f_b(x_t, t) = p(x_{t'} = 1 | x_t).
        pred_original_sample (`torch.Tensor` or `None`):
            P(x_0 = 1 | x_t) as the network estimates it (``prediction_type="sample"``), else `None`.
    """

    prev_sample: torch.Tensor
    reverse_probability: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(B(p) ‖ B(q)) = p log(p/q) + (1 − p) log((1 − p)/(1 − q)) in nats, elementwise.

    0 · log 0 is 0, so a degenerate p (the data, at the first step) gives the cross-entropy −log q(x).
    """
    p = p.double()
    q = q.double().clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return torch.xlogy(p, p) - torch.xlogy(p, q) + torch.xlogy(1 - p, 1 - p) - torch.xlogy(1 - p, 1 - q)


def sohl_dickstein_betas(num_train_timesteps: int) -> torch.Tensor:
    """β_t = 1 / (T − t + 1) for t = 1..T (timestep i = t − 1 gets 1 / (T − i)).

    Each step then removes the same fraction 1/T of the original signal: ᾱ_t = (T − t)/T, and
    ᾱ_T = 0, so x_T ~ Bernoulli(p) exactly whatever x_0 was.
    """
    steps = torch.arange(num_train_timesteps, dtype=torch.float64)
    return 1.0 / (num_train_timesteps - steps)


class BinomialDiffusionScheduler(SchedulerMixin, ConfigMixin):
    r"""Binomial diffusion of binary data (Sohl-Dickstein et al. 2015), with the theory's quantities as methods.

    Args:
        num_train_timesteps (`int`, defaults to 2000):
            T, the length of the forward chain (the paper's heartbeat run: 2000).
        beta_schedule (`str`, defaults to ``"sohl-dickstein"``):
            ``"sohl-dickstein"``: β_t = 1/(T − t + 1), which erases a constant 1/T of the signal per step and
            reaches the equilibrium exactly at t = T. Ignored when ``trained_betas`` is given.
        trained_betas (`list[float]`, *optional*):
            Custom β_1..β_T, each in (0, 1].
        stationary_probability (`float`, defaults to 0.5):
            p of the equilibrium Bernoulli(p) that the forward kernel mixes towards and the reverse chain
            starts from. Sohl-Dickstein et al. used the data's rate of ones (0.2 for the heartbeat).
        prediction_type (`str`, defaults to ``"sample"``):
            What the network's output (logits, one per bit) means: ``"sample"``: logit of P(x_0 = 1 | x_t),
            from which f_b follows exactly through the posterior (`reverse_probability`); or
            ``"reverse_probability"``: the logit of f_b(x_t, t) itself, the paper's readout.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 2000,
        beta_schedule: str = "sohl-dickstein",
        trained_betas: Sequence[float] | np.ndarray | None = None,
        stationary_probability: float = 0.5,
        prediction_type: str = "sample",
    ):
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)) \
                or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
        if not 0.0 < float(stationary_probability) < 1.0:
            raise ValueError(f"stationary_probability must lie in (0, 1), got {stationary_probability}")
        if prediction_type not in BINOMIAL_PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {BINOMIAL_PREDICTION_TYPES}, got {prediction_type!r}")
        if trained_betas is not None:
            betas = torch.as_tensor(np.asarray(trained_betas, dtype=np.float64))
            if betas.ndim != 1 or len(betas) != num_train_timesteps:
                raise ValueError(f"trained_betas must hold num_train_timesteps={num_train_timesteps} values, "
                                 f"got shape {tuple(betas.shape)}")
        elif beta_schedule == "sohl-dickstein":
            betas = sohl_dickstein_betas(num_train_timesteps)
        else:
            raise ValueError(f"beta_schedule must be one of {BINOMIAL_BETA_SCHEDULES} (or pass trained_betas), "
                             f"got {beta_schedule!r}")
        bad = ~((betas > 0) & (betas <= 1))
        if bad.any():
            index = int(bad.nonzero()[0])
            raise ValueError(f"betas must lie in (0, 1]; beta at timestep {index} is {betas[index].item()}")

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        self._prev = {int(t): int(t) - 1 for t in self.timesteps}

    # ------------------------------------------------------------------ the chain of timesteps

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: Sequence[int] | None = None) -> None:
        """The timesteps the reverse chain visits, descending: n evenly spaced ones from T − 1 to 0, or `timesteps`.

        A shorter chain is exact in form: from t to the next listed t' the forward kernel is binomial
        with α'_t = ᾱ_t / ᾱ_{t'}.
        """
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("set_timesteps needs exactly one of num_inference_steps and timesteps")
        if timesteps is not None:
            chain = np.asarray(list(timesteps), dtype=np.int64)
            if chain.ndim != 1 or len(chain) == 0 or (np.diff(chain) >= 0).any() or chain[0] >= T or chain[-1] < 0:
                raise ValueError(f"timesteps must be strictly descending within [0, {T}), got {list(timesteps)}")
        else:
            if isinstance(num_inference_steps, bool) or not 1 <= int(num_inference_steps) <= T:
                raise ValueError(f"num_inference_steps must be between 1 and num_train_timesteps={T}, "
                                 f"got {num_inference_steps}")
            chain = np.unique(np.round(np.linspace(0, T - 1, int(num_inference_steps))).astype(np.int64))[::-1]
            self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.from_numpy(chain.copy()).to(device)
        self._prev = {int(t): int(p) for t, p in zip(chain, list(chain[1:]) + [-1])}

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """t', the timestep the reverse step from `timestep` goes to (−1: the data)."""
        return self._prev.get(int(timestep), int(timestep) - 1)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The network sees the bits as they are."""
        return sample

    # ------------------------------------------------------------------ quantities of the theory

    def _alpha_bar(self, timesteps: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ at `timesteps` (ᾱ_{−1} = 1), shaped to broadcast over `like`'s per-sample dimensions."""
        t = torch.as_tensor(timesteps, device=self.alphas_cumprod.device).long().reshape(-1)
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        values = table[t + 1].to(like.device)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def _prev_timesteps(self, timesteps, prev_timesteps):
        if prev_timesteps is not None:
            return prev_timesteps
        t = torch.as_tensor(timesteps).long()
        return t - 1

    def q_probability(self, original_samples: torch.Tensor, timesteps: int | torch.Tensor) -> torch.Tensor:
        """q(x_t = 1 | x_0) = x_0 ᾱ_t + p (1 − ᾱ_t): the closed form of t kernels composed."""
        alpha_bar = self._alpha_bar(timesteps, original_samples)
        p = self.config.stationary_probability
        return original_samples.double() * alpha_bar + p * (1 - alpha_bar)

    def q_step_probability(self, sample: torch.Tensor, timesteps: int | torch.Tensor,
                           prev_timesteps: int | torch.Tensor | None = None) -> torch.Tensor:
        """q(x_t = 1 | x_{t'}) = x_{t'} α'_t + p (1 − α'_t), α'_t = ᾱ_t / ᾱ_{t'}: the forward kernel T_π.

        On the training chain α'_t = 1 − β_t; `sample` holds x_{t'}.
        """
        prev = self._prev_timesteps(timesteps, prev_timesteps)
        alpha = self._alpha_bar(timesteps, sample) / self._alpha_bar(prev, sample)
        p = self.config.stationary_probability
        return sample.double() * alpha + p * (1 - alpha)

    def posterior_probability(self, original_samples: torch.Tensor, sample: torch.Tensor,
                              timesteps: int | torch.Tensor,
                              prev_timesteps: int | torch.Tensor | None = None) -> torch.Tensor:
        r"""q(x_{t'} = 1 | x_t, x_0) = q(x_t | x_{t'} = 1) a / [q(x_t | x_{t'} = 1) a + q(x_t | x_{t'} = 0)(1 − a)],
        a = q(x_{t'} = 1 | x_0), by Bayes' rule on the Markov chain x_0 → x_{t'} → x_t.

        `original_samples` may be a probability of x_0 = 1 rather than a bit: the posterior is linear in
        it per position. At t' = −1 the "posterior" is x_0 itself.
        """
        prev = self._prev_timesteps(timesteps, prev_timesteps)
        x0 = original_samples.double()
        a = self.q_probability(x0, prev)
        x_t = sample.double()
        up_from_one = self.q_step_probability(torch.ones_like(x_t), timesteps, prev)
        up_from_zero = self.q_step_probability(torch.zeros_like(x_t), timesteps, prev)
        likelihood_one = torch.where(x_t > 0.5, up_from_one, 1 - up_from_one)
        likelihood_zero = torch.where(x_t > 0.5, up_from_zero, 1 - up_from_zero)
        if x0.dim() == 0 or torch.all((x0 == 0) | (x0 == 1)):
            joint_one = likelihood_one * a
            return joint_one / (joint_one + likelihood_zero * (1 - a))
        # x_0 given as a probability: mix the two exact posteriors.
        ones, zeros = torch.ones_like(x0), torch.zeros_like(x0)
        return (x0 * self.posterior_probability(ones, sample, timesteps, prev)
                + (1 - x0) * self.posterior_probability(zeros, sample, timesteps, prev))

    def reverse_probability(self, model_output: torch.Tensor, sample: torch.Tensor, timesteps: int | torch.Tensor,
                            prev_timesteps: int | torch.Tensor | None = None) -> torch.Tensor:
        r"""f_b(x_t, t) = p(x_{t'} = 1 | x_t) from the network's logits.

        ``prediction_type="sample"``: x̂ = σ(output) = P(x_0 = 1 | x_t) and f_b = x̂ q(x_{t'}=1|x_t,x_0=1) +
        (1 − x̂) q(x_{t'}=1|x_t,x_0=0), the exact reverse marginal of each bit when x̂ is exact (the forward
        chain is independent per bit). ``"reverse_probability"``: f_b = σ(output).
        """
        if self.config.prediction_type == "reverse_probability":
            return torch.sigmoid(model_output.double())
        return self.posterior_probability(self.predict_start(model_output), sample, timesteps, prev_timesteps)

    def predict_start(self, model_output: torch.Tensor) -> torch.Tensor:
        """x̂_0 = P(x_0 = 1 | x_t) = σ(output), float64, for ``prediction_type="sample"``."""
        return torch.sigmoid(model_output.double())

    # ------------------------------------------------------------------ forward and reverse draws

    def add_noise(self, original_samples: torch.Tensor, timesteps: int | torch.Tensor,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = B(x_0 ᾱ_t + p(1 − ᾱ_t)), one independent draw per bit.

        The randomness is a uniform `noise` on [0, 1) of the samples' shape (x_t = [noise < q]), drawn
        through `generator` when not given: the binomial counterpart of DDPM's ε.
        """
        check_binary(original_samples, "original_samples")
        probability = self.q_probability(original_samples, timesteps)
        if noise is None:
            noise = torch.rand(original_samples.shape, generator=generator, dtype=torch.float64,
                               device=generator.device if generator is not None else "cpu").to(
                original_samples.device)
        return (noise.double() < probability).to(original_samples.dtype)

    def prior_sample(self, shape: Sequence[int], generator: torch.Generator | None = None,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x_T ~ Bernoulli(p), the reverse chain's start."""
        uniform = torch.rand(tuple(shape), generator=generator, dtype=torch.float64,
                             device=generator.device if generator is not None else "cpu")
        return (uniform < self.config.stationary_probability).to(device=device, dtype=dtype)

    def step(self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True):
        """One reverse step: x_{t'} ~ B(f_b(x_t, t)) (`reverse_probability`), a uniform per bit from `generator`."""
        t = int(timestep)
        prev = self.previous_timestep(t)
        probability = self.reverse_probability(model_output, sample, t, prev)
        uniform = torch.rand(sample.shape, generator=generator, dtype=torch.float64,
                             device=generator.device if generator is not None else "cpu").to(sample.device)
        prev_sample = (uniform < probability).to(sample.dtype)
        x0 = self.predict_start(model_output) if self.config.prediction_type == "sample" else None
        if not return_dict:
            return (prev_sample,)
        return BinomialDiffusionSchedulerOutput(prev_sample=prev_sample, reverse_probability=probability,
                                                pred_original_sample=x0)

    # ------------------------------------------------------------------ the bound's terms (nats per sample)

    def prior_kl(self, original_samples: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) ‖ B(p)), summed over each sample's bits: 0 when ᾱ_T = 0 (Sohl-Dickstein's β)."""
        T = self.config.num_train_timesteps
        q = self.q_probability(original_samples, T - 1)
        p = torch.full_like(q, self.config.stationary_probability)
        return bernoulli_kl(q, p).flatten(1).sum(1)

    def vb_term(self, model_output: torch.Tensor, original_samples: torch.Tensor, sample: torch.Tensor,
                timesteps: int | torch.Tensor) -> torch.Tensor:
        r"""The bound's term at timestep t on the training chain, summed over each sample's bits:

        KL(q(x_{t−1} | x_t, x_0) ‖ B(f_b(x_t, t))) for t ≥ 1, and at t = 0 the decoder −log p(x_0 | x_1),
        which is the same KL with the degenerate posterior q(x_{−1} | ·) = δ_{x_0} (a point mass has zero
        entropy). This is where the tutorial's edge terms H_q(X_1|X_0) go: with a binary x_0 the first
        step is scored as a likelihood, like every other step as a KL.
        """
        posterior = self.posterior_probability(original_samples, sample, timesteps)
        model = self.reverse_probability(model_output, sample, timesteps)
        return bernoulli_kl(posterior, model).flatten(1).sum(1)


def check_binary(samples: torch.Tensor, name: str = "samples") -> None:
    """Raise ValueError unless every value of `samples` is 0 or 1."""
    bad = ~((samples == 0) | (samples == 1))
    if bad.any():
        value = samples[bad].flatten()[0].item()
        raise ValueError(f"{name} must be binary (0 or 1) for binomial diffusion; found the value {value}")
