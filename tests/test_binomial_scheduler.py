"""BinomialDiffusionScheduler against brute-force enumeration of the chain (T ≤ 6, at most 3 bits)."""

import itertools
import math

import numpy as np
import pytest
import torch

from ddpm_from_scratch.schedulers.scheduling_binomial import BinomialDiffusionScheduler, bernoulli_kl

P = 0.3
BETAS = [0.05, 0.2, 0.5, 0.1, 0.9, 1.0]


def kernel(beta: float, p: float = P) -> np.ndarray:
    """The one-step matrix M[x_{t−1}, x_t] = q(x_t | x_{t−1}) of B(x_{t−1}(1 − β) + pβ), from the definition."""
    up = {x: x * (1 - beta) + p * beta for x in (0, 1)}
    return np.array([[1 - up[0], up[0]], [1 - up[1], up[1]]])


def marginal(betas, x0: int, upto: int) -> np.ndarray:
    """q(y_upto | x0) as a 2-vector, multiplying the kernels of timesteps 0..upto."""
    row = np.eye(2)[x0]
    for beta in betas[: upto + 1]:
        row = row @ kernel(beta)
    return row


@pytest.fixture
def scheduler():
    return BinomialDiffusionScheduler(num_train_timesteps=len(BETAS), trained_betas=BETAS, stationary_probability=P)


def test_q_xt_given_x0_is_the_product_of_the_one_step_kernels(scheduler):
    for x0, t in itertools.product((0, 1), range(len(BETAS))):
        got = scheduler.q_probability(torch.tensor([[float(x0)]]), t).item()
        assert got == pytest.approx(marginal(BETAS, x0, t)[1], abs=1e-12)


def test_the_posterior_is_bayes_rule_on_the_enumerated_chain(scheduler):
    for x0, t, xt in itertools.product((0, 1), range(1, len(BETAS)), (0, 1)):
        before = marginal(BETAS, x0, t - 1)  # q(y_{t−1} | x0)
        joint = before * kernel(BETAS[t])[:, xt]  # q(y_{t−1}, y_t = xt | x0)
        got = scheduler.posterior_probability(torch.tensor([[float(x0)]]), torch.tensor([[float(xt)]]), t).item()
        assert got == pytest.approx(joint[1] / joint.sum(), abs=1e-12)


def test_the_posterior_before_the_first_step_is_the_data(scheduler):
    for x0, xt in itertools.product((0.0, 1.0), (0.0, 1.0)):
        assert scheduler.posterior_probability(torch.tensor([[x0]]), torch.tensor([[xt]]), 0).item() == x0


def test_a_respaced_step_is_the_composed_kernel(scheduler):
    scheduler.set_timesteps(timesteps=[5, 2, 0])
    assert scheduler.previous_timestep(5) == 2 and scheduler.previous_timestep(0) == -1
    composed = kernel(BETAS[3]) @ kernel(BETAS[4]) @ kernel(BETAS[5])
    for x in (0, 1):
        got = scheduler.q_step_probability(torch.tensor([[float(x)]]), 5, 2).item()
        assert got == pytest.approx(composed[x, 1], abs=1e-12)


def test_sohl_dickstein_betas_remove_a_constant_fraction_and_end_at_equilibrium():
    T = 5
    scheduler = BinomialDiffusionScheduler(num_train_timesteps=T, stationary_probability=0.2)
    np.testing.assert_allclose(scheduler.betas.numpy(), [1 / 5, 1 / 4, 1 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), [(T - t) / T for t in range(1, T + 1)], atol=1e-15)
    for x0 in (0.0, 1.0):
        assert scheduler.q_probability(torch.tensor([[x0]]), T - 1).item() == pytest.approx(0.2, abs=1e-15)
    assert scheduler.prior_kl(torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.0, abs=1e-12)


class TableModel(torch.nn.Module):
    """Logits that depend on the whole of x_t and on t through fixed random weights (bits are coupled)."""

    def __init__(self, length: int, T: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(T, length, length, generator=g, dtype=torch.float64)
        self.bias = torch.randn(T, length, generator=g, dtype=torch.float64)

    def forward(self, sample, t):
        return torch.einsum("ij,bj->bi", self.weight[t], 2 * sample.double() - 1) + self.bias[t]


def exact_negative_elbo(scheduler, model, x0: tuple, reverse_prob) -> float:
    """E_q[log q(y_{0:T−1} | x0) − log p(x0, y_{0:T−1})] by enumerating every trajectory (nats)."""
    L, T, p = len(x0), scheduler.config.num_train_timesteps, scheduler.config.stationary_probability
    betas = scheduler.betas.numpy()
    total = 0.0
    for flat in itertools.product((0, 1), repeat=L * T):
        ys = np.array(flat).reshape(T, L)
        log_q, previous = 0.0, np.array(x0)
        for t in range(T):
            up = previous * (1 - betas[t]) + p * betas[t]
            log_q += np.sum(np.log(np.where(ys[t] == 1, up, 1 - up)))
            previous = ys[t]
        if not np.isfinite(log_q):
            continue
        log_p = np.sum(np.log(np.where(ys[T - 1] == 1, p, 1 - p)))
        for t in range(T - 1, -1, -1):
            target = ys[t - 1] if t > 0 else np.array(x0)
            f = reverse_prob(ys[t], t)
            log_p += np.sum(np.log(np.where(target == 1, f, 1 - f)))
        total += math.exp(log_q) * (log_q - log_p)
    return total


@pytest.mark.parametrize("prediction_type", ["sample", "reverse_probability"])
def test_the_bound_terms_add_up_to_the_trajectory_elbo(prediction_type):
    T, L = 4, 2
    scheduler = BinomialDiffusionScheduler(num_train_timesteps=T, trained_betas=[0.1, 0.3, 0.6, 0.8],
                                           stationary_probability=P, prediction_type=prediction_type)
    model = TableModel(L, T)

    def reverse_prob(y, t):
        sample = torch.tensor(y, dtype=torch.float64)[None]
        return scheduler.reverse_probability(model(sample, t), sample, t)[0].numpy()

    for x0 in [(0, 1), (1, 1)]:
        x0_tensor = torch.tensor([x0], dtype=torch.float64)
        decomposed = scheduler.prior_kl(x0_tensor).item()
        for t in range(T):
            q_bits = [marginal(scheduler.betas.numpy(), b, t) for b in x0]
            for y in itertools.product((0, 1), repeat=L):
                weight = np.prod([q_bits[i][y[i]] for i in range(L)])
                sample = torch.tensor([y], dtype=torch.float64)
                decomposed += weight * scheduler.vb_term(model(sample, t), x0_tensor, sample, t).item()
        assert decomposed == pytest.approx(exact_negative_elbo(scheduler, model, x0, reverse_prob), rel=1e-10)


def test_with_the_true_reverse_kernel_the_bound_is_the_entropy_of_the_data():
    # One bit with P(x0 = 1) = r: the exact reverse chain makes p(x_{0:T}) = q(x_{0:T}), so E[L] = H(r).
    T, r = 5, 0.7
    scheduler = BinomialDiffusionScheduler(num_train_timesteps=T, stationary_probability=P,
                                           prediction_type="reverse_probability")
    betas = scheduler.betas.numpy()
    data = np.array([1 - r, r])
    marginals = [data]
    for t in range(T):
        marginals.append(marginals[-1] @ kernel(betas[t]))  # marginals[t + 1] = q(y_t)

    def true_reverse_logit(y, t):  # p(y_{t−1} = 1 | y_t), y_{−1} = x0
        joint = marginals[t] * kernel(betas[t])[:, int(y)]
        probability = joint[1] / joint.sum()
        return math.log(probability / (1 - probability))

    expected = 0.0
    for x0, weight in ((0, 1 - r), (1, r)):
        x0_tensor = torch.tensor([[float(x0)]], dtype=torch.float64)
        bound = scheduler.prior_kl(x0_tensor).item()
        for t in range(T):
            q_t = marginal(betas, x0, t)
            for y in (0, 1):
                logit = torch.tensor([[true_reverse_logit(y, t)]], dtype=torch.float64)
                sample = torch.tensor([[float(y)]], dtype=torch.float64)
                bound += q_t[y] * scheduler.vb_term(logit, x0_tensor, sample, t).item()
        expected += weight * bound
    entropy = -(r * math.log(r) + (1 - r) * math.log(1 - r))
    assert expected == pytest.approx(entropy, rel=1e-10)


def test_add_noise_draws_each_bit_with_the_closed_form_probability(scheduler):
    x0 = torch.tensor([[0.0, 1.0]]).repeat(200_000, 1)
    noisy = scheduler.add_noise(x0, 2, generator=torch.Generator().manual_seed(0))
    for column, bit in enumerate((0, 1)):
        want = marginal(BETAS, bit, 2)[1]
        assert abs(noisy[:, column].mean().item() - want) < 5 * math.sqrt(want * (1 - want) / len(x0))
    again = scheduler.add_noise(x0, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


def test_step_draws_from_the_reverse_probability(scheduler):
    sample = torch.tensor([[1.0, 0.0]]).repeat(200_000, 1)
    logits = torch.tensor([[0.4, -1.2]]).repeat(200_000, 1)
    output = scheduler.step(logits, 3, sample, generator=torch.Generator().manual_seed(1))
    want = scheduler.reverse_probability(logits[:1], sample[:1], 3)[0]
    got = output.prev_sample.mean(0)
    assert torch.all((got.double() - want).abs() < 5 * (want * (1 - want) / len(sample)).sqrt())
    torch.testing.assert_close(output.reverse_probability[0], want)


def test_bernoulli_kl_of_the_data_is_its_cross_entropy():
    q = torch.tensor([0.25])
    assert bernoulli_kl(torch.tensor([1.0]), q).item() == pytest.approx(-math.log(0.25))
    assert bernoulli_kl(torch.tensor([0.0]), q).item() == pytest.approx(-math.log(0.75))
    assert bernoulli_kl(torch.tensor([0.4]), torch.tensor([0.4])).item() == pytest.approx(0.0, abs=1e-15)


def test_the_config_round_trips(tmp_path, scheduler):
    scheduler.save_pretrained(tmp_path)
    loaded = BinomialDiffusionScheduler.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.alphas_cumprod, scheduler.alphas_cumprod)
    assert loaded.config.stationary_probability == P


@pytest.mark.parametrize("kwargs, message", [
    ({"stationary_probability": 1.0}, "stationary_probability must lie in \\(0, 1\\), got 1.0"),
    ({"stationary_probability": 0.0}, "stationary_probability"),
    ({"num_train_timesteps": 3, "trained_betas": [0.1, 0.0, 0.5]}, "beta at timestep 1 is 0.0"),
    ({"num_train_timesteps": 2, "trained_betas": [0.1, 1.5]}, "beta at timestep 1 is 1.5"),
    ({"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}, "num_train_timesteps=3"),
    ({"beta_schedule": "linear"}, "beta_schedule must be one of"),
    ({"num_train_timesteps": 0}, "num_train_timesteps must be a positive integer"),
    ({"prediction_type": "epsilon"}, "prediction_type"),
])
def test_bad_configuration_is_refused_naming_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BinomialDiffusionScheduler(**kwargs)


def test_non_binary_data_is_refused(scheduler):
    with pytest.raises(ValueError, match="original_samples must be binary .* 0.5"):
        scheduler.add_noise(torch.tensor([[0.0, 0.5]]), 1)
