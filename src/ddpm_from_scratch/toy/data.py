"""The data of Sohl-Dickstein et al.'s (2015) toy problems, generated from a seed (no download).

* Binary heartbeat: sequences of length 20 with a 1 at every 5th position, the phase uniform over the
  5 possibilities; 5 equally likely sequences, so the best log-likelihood is log2(1/5) = −2.322 bits.
* Swiss roll: scikit-learn's `make_swiss_roll` (its default: no noise) in its (x, z) plane, scaled
  to zero mean and unit variance per axis with the training points' statistics.
"""

from __future__ import annotations

import math

import numpy as np
import torch

HEARTBEAT_LENGTH = 20
HEARTBEAT_PERIOD = 5
# log2 of the probability of each of the equally likely heartbeats: the exact optimum of K.
HEARTBEAT_OPTIMUM_BITS = -math.log2(HEARTBEAT_PERIOD)
SWISS_ROLL_NOISE = 0.0


def heartbeat_patterns(length: int = HEARTBEAT_LENGTH, period: int = HEARTBEAT_PERIOD) -> torch.Tensor:
    """The `period` possible heartbeats, ``(period, length)`` 0/1 floats: row k has ones at k, k + period, …"""
    if period < 1 or length < period:
        raise ValueError(f"a heartbeat needs 1 ≤ period ≤ length, got period={period}, length={length}")
    positions = torch.arange(length)
    return (positions[None, :] % period == torch.arange(period)[:, None]).float()


def heartbeat_sequences(num_sequences: int, seed: int, length: int = HEARTBEAT_LENGTH,
                        period: int = HEARTBEAT_PERIOD) -> torch.Tensor:
    """`num_sequences` heartbeats with phases drawn uniformly through a generator seeded with `seed`."""
    phases = torch.randint(period, (num_sequences,), generator=torch.Generator().manual_seed(seed))
    return heartbeat_patterns(length, period)[phases]


def is_heartbeat(sequences: torch.Tensor | np.ndarray, period: int = HEARTBEAT_PERIOD) -> torch.Tensor:
    """Which rows are one of the valid heartbeats exactly, ``(N,)`` bool."""
    sequences = torch.as_tensor(np.asarray(sequences), dtype=torch.float32)
    patterns = heartbeat_patterns(sequences.shape[1], period)
    return (sequences[:, None, :] == patterns[None]).all(-1).any(-1)


def swiss_roll_raw(num_points: int, seed: int, noise: float = SWISS_ROLL_NOISE) -> np.ndarray:
    """Points of scikit-learn's Swiss roll in its (x, z) plane, unscaled, ``(N, 2)`` float64."""
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(num_points, noise=noise, random_state=seed)
    return points[:, [0, 2]]


def swiss_roll_splits(num_train: int, num_test: int, seed: int,
                      noise: float = SWISS_ROLL_NOISE) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Training and held-out Swiss-roll points (independent draws), scaled by the training points'
    per-axis mean and standard deviation; returns ``(train, test, {"mean", "std"})``."""
    train = swiss_roll_raw(num_train, seed, noise)
    test = swiss_roll_raw(num_test, seed + 1_000_003, noise)
    mean, std = train.mean(0), train.std(0)
    scale = {"mean": mean.tolist(), "std": std.tolist()}
    return (torch.from_numpy((train - mean) / std).float(), torch.from_numpy((test - mean) / std).float(), scale)
