"""Replay buffer sampling, FIFO eviction, checkpoint round trip; observation normalizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.buffer import ReplayBuffer
from common.datasets import Dataset
from common.normalizer import ObsNormalizer


def make_dataset(n=100, obs_dim=3, act_dim=2) -> Dataset:
    idx = np.arange(n, dtype=np.float32)
    obs = np.repeat(idx[:, None], obs_dim, 1)  # row i holds the value i everywhere: easy to trace
    return Dataset("toy", "Hopper-v4", obs, np.repeat(idx[:, None], act_dim, 1), idx.copy(), obs + 0.5,
                   (np.arange(n) % 10 == 9), np.zeros(n, bool), 0.0, 1.0)


def test_from_dataset_layout_and_uniform_sampling():
    ds = make_dataset(n=10)
    buf = ReplayBuffer.from_dataset(ds, online_capacity=5, seed=0)
    assert (buf.capacity, len(buf), buf.num_fixed) == (15, 10, 10)
    batch = buf.sample(20000)
    # Every field of a sampled row comes from the same transition.
    ids = batch.rewards
    assert torch.equal(batch.observations[:, 0], ids) and torch.equal(batch.actions[:, 1], ids)
    assert torch.equal(batch.next_observations[:, 2], ids + 0.5)
    assert torch.equal(batch.terminals, (ids == 9).float())
    counts = torch.bincount(ids.long(), minlength=10).float()
    # Uniform: each of 10 rows ~2000 times; 5 sigma of a binomial(20000, 0.1) is ~212.
    assert (counts - 2000).abs().max() < 212
    assert batch.observations.dtype == torch.float32


def test_sampling_is_seeded():
    ds = make_dataset()
    a = ReplayBuffer.from_dataset(ds, 0, seed=3).sample(64).rewards
    b = ReplayBuffer.from_dataset(ds, 0, seed=3).sample(64).rewards
    c = ReplayBuffer.from_dataset(ds, 0, seed=4).sample(64).rewards
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prefill_fifo_eviction_and_capacity_floor():
    ds = make_dataset(n=1000)
    buf = ReplayBuffer.prefilled(ds, num_prefill=4, capacity=6, seed=0)
    prefill_ids = buf.data[:4, ds.obs_dim + ds.act_dim].tolist()  # reward column = source row
    rng = np.random.default_rng(0)
    assert prefill_ids == rng.integers(0, 1000, size=4).astype(float).tolist()  # uniform with replacement
    for k in range(4):  # online transitions get ids 5000 + k
        buf.add(np.full(3, 5000 + k), np.zeros(2), 5000 + k, np.zeros(3), False)
    assert len(buf) == 6
    rewards = sorted(buf.data[:, ds.obs_dim + ds.act_dim].tolist())
    # Two oldest prefill rows were evicted first; the newest online rows are all there.
    assert rewards == sorted(prefill_ids[2:] + [5000.0, 5001.0, 5002.0, 5003.0])
    # Capacity is never below the prefill.
    assert ReplayBuffer.prefilled(ds, num_prefill=50, capacity=10).capacity == 50


def test_sampling_is_uniform_over_every_stored_row_including_the_newest():
    """After online adds, each of the `size` rows (prefill and online, the newest included) is drawn with probability
    1/size: 60,000 draws over 6 rows, 10,000 each; 5 sigma of a binomial(60000, 1/6) is ~456."""
    buf = ReplayBuffer.prefilled(make_dataset(n=1000), num_prefill=4, capacity=50, seed=3)
    for k in range(2):
        buf.add(np.full(3, 5000 + k), np.zeros(2), 5000 + k, np.zeros(3), False)
    assert len(buf) == 6
    ids = buf.sample(60000).rewards
    stored = buf.data[:6, 5]  # the reward column holds each row's id
    counts = torch.stack([(ids == i).sum() for i in stored]).float()
    assert counts.sum() == 60000 and (counts - 10000).abs().max() < 456
    assert (ids == 5001).any()  # the newest row


def test_fifo_eviction_order_over_several_wraps_and_size_never_above_capacity():
    """Capacity 4, 11 online rows after 2 prefilled ones: after each add the buffer holds exactly the 4 newest rows
    (or all of them while fewer), oldest evicted first, through three wraps of the ring."""
    ds = make_dataset(n=1000)
    buf = ReplayBuffer.prefilled(ds, num_prefill=2, capacity=4, seed=0)
    history = buf.data[:2, 5].tolist()
    for k in range(11):
        buf.add(np.zeros(3), np.zeros(2), 100 + k, np.zeros(3), False)
        history.append(100.0 + k)
        assert len(buf) == min(len(history), 4) <= buf.capacity == 4
        assert sorted(buf.data[:len(buf), 5].tolist()) == sorted(history[-4:])
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        ReplayBuffer(0, 3, 2)


def test_from_dataset_never_evicts_offline_rows():
    buf = ReplayBuffer.from_dataset(make_dataset(n=5), online_capacity=2)
    buf.add(np.zeros(3), np.zeros(2), 1.0, np.zeros(3), True)
    buf.add(np.zeros(3), np.zeros(2), 1.0, np.zeros(3), True)
    with pytest.raises(RuntimeError, match="offline rows would be overwritten"):
        buf.add(np.zeros(3), np.zeros(2), 1.0, np.zeros(3), True)


def test_state_dict_round_trip_keeps_online_rows_and_sampler():
    ds = make_dataset(n=20)
    buf = ReplayBuffer.from_dataset(ds, online_capacity=10, seed=1)
    for k in range(3):
        buf.add(np.full(3, 100 + k), np.ones(2), 100 + k, np.zeros(3), k == 2)
    buf.sample(7)
    state = buf.state_dict()
    assert state["rows"].shape[0] == 3  # only the online part is checkpointed
    other = ReplayBuffer.from_dataset(ds, online_capacity=10, seed=99)
    other.load_state_dict(state)
    assert torch.equal(other.data, buf.data) and (other.size, other.ptr) == (buf.size, buf.ptr)
    assert torch.equal(other.sample(32).rewards, buf.sample(32).rewards)
    with pytest.raises(ValueError, match="does not match"):
        ReplayBuffer.from_dataset(make_dataset(n=21), online_capacity=10).load_state_dict(state)


def test_normalizer_statistics_and_round_trip():
    obs = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]], dtype=np.float32)
    norm = ObsNormalizer.from_observations(obs)
    std0 = np.std([1.0, 3.0, 5.0]) + 1e-3
    np.testing.assert_allclose(norm.mean.numpy(), [3.0, 10.0])
    np.testing.assert_allclose(norm.std.numpy(), [std0, 1e-3], rtol=1e-6)
    x = torch.tensor([[5.0, 11.0]])
    np.testing.assert_allclose(norm(x).numpy(), [[2.0 / std0, 1000.0]], rtol=1e-5)
    torch.testing.assert_close(norm.unnormalize(norm(x)), x)
    again = ObsNormalizer.from_state_dict(norm.state_dict())
    torch.testing.assert_close(again(x), norm(x))
    assert again.matches(norm) and not again.matches(ObsNormalizer.identity(2))
    assert torch.equal(ObsNormalizer.identity(2)(x), x)
