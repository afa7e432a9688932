"""No update waits on the device: update() of both agents and the VAE step read nothing back to the host (their metrics
stay tensors; common.recorder sums them on the device), and an online loop reads the device once per env step (the
action) outside its records, evaluations and checkpoints.

A read is counted where it would stall a GPU queue: `aten._local_scalar_dense` (what .item(), float(t), int(t) and
bool(t) dispatch to), and Tensor.tolist / Tensor.numpy (and Tensor.cpu of a tensor on another device), which on a CPU
tensor dispatch nothing."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adaptive_bc.agent import Config as BcConfig
from adaptive_bc.agent import RedqBcAgent
from common.buffer import Batch
from spot.agent import Config as SpotConfig
from spot.agent import SpotAgent, VaeTrainer


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count, self.paused, self.what = 0, False, []

    def note(self, what: str) -> None:
        if not self.paused:
            self.count += 1
            self.what.append(what)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.note("item")
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def pause(self):
        was, self.paused = self.paused, True
        try:
            yield
        finally:
            self.paused = was


@contextlib.contextmanager
def counting_host_reads(monkeypatch):
    reads = HostReads()
    for name in ("tolist", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if _name != "cpu" or self.device.type != "cpu":  # .cpu() of a CPU tensor reads nothing (.numpy() follows)
                reads.note(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    with reads:
        yield reads


def batch(n=32, obs_dim=5, act_dim=2, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, obs_dim, generator=g), torch.rand(n, act_dim, generator=g) * 2 - 1,
                 torch.randn(n, generator=g), torch.randn(n, obs_dim, generator=g),
                 (torch.rand(n, generator=g) < 0.1).float())


def test_the_counter_sees_each_kind_of_read(monkeypatch):
    t = torch.ones(3)
    with counting_host_reads(monkeypatch) as reads:
        t.sum().item(), float(t[0]), bool(t[1] > 0), t.tolist(), t.numpy(), t.cpu()
    assert reads.what == ["item", "item", "item", "tolist", "numpy"]


@pytest.mark.parametrize("target", ["redq", "min"])
def test_adaptive_bc_update_reads_nothing_back(monkeypatch, target):
    torch.manual_seed(0)
    agent = RedqBcAgent(5, 2, 1.0, BcConfig(num_critics=4, hidden_dim=16, target=target))
    agent.use_min_target = target == "min"
    with counting_host_reads(monkeypatch) as reads:
        metrics = [agent.update(batch(seed=i)) for i in range(5)]  # critic-only and actor updates, the first too
    assert reads.count == 0, reads.what
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for m in metrics for v in m.values())


@pytest.mark.parametrize("iwae", [False, True])
def test_spot_update_and_vae_step_read_nothing_back(monkeypatch, iwae):
    torch.manual_seed(0)
    agent = SpotAgent(5, 2, 1.0, SpotConfig(lambd=0.1, hidden_dim=16, vae_hidden=16, iwae=iwae, num_samples=4))
    trainer = VaeTrainer(agent.vae, agent.normalizer, total_steps=3)
    with counting_host_reads(monkeypatch) as reads:
        vae_metrics = [trainer.update(batch(seed=i)) for i in range(3)]  # the last one freezes the VAE
        metrics = [agent.update(batch(seed=10 + i)) for i in range(5)]
    assert reads.count == 0, reads.what
    assert all(isinstance(v, torch.Tensor) for m in [*vae_metrics, *metrics] for v in m.values())
    agent.check_divergence()  # the one read, outside the update: nothing diverged


@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_an_online_loop_reads_the_device_once_per_env_step(algo, monkeypatch, tmp_path):
    """Outside its records, evaluations and checkpoints, the loop's only read is the action of each env step."""
    import common.online
    from common.recorder import Recorder
    from common.run import Run
    from test_online_loops import offline_checkpoint, online
    from conftest import write_d4rl_file

    data = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(data, episodes=[(40, "terminal"), (60, "timeout"), (30, "terminal")], next_obs=True)
    checkpoint = offline_checkpoint(algo, data, tmp_path / "offline")
    steps = []
    env_step = common.online.OnlineEnv.step

    with counting_host_reads(monkeypatch) as reads:
        def paused(original):
            def run(*args, **kwargs):
                with reads.pause():
                    return original(*args, **kwargs)
            return run

        for cls, name in ((Recorder, "write"), (Recorder, "evaluate_result"), (Recorder, "means"), (Run, "save_last"),
                          (Run, "finish"), (common.online.OnlineEnv, "reset")):
            monkeypatch.setattr(cls, name, paused(getattr(cls, name)))
        monkeypatch.setattr(common.online.OnlineEnv, "step",
                            lambda self, action: steps.append(reads.count) or env_step(self, action))
        online(algo, checkpoint, tmp_path / "online", "--online_steps", "60", "--eval_every", "1000",
               "--checkpoint_every", "25")
    assert len(steps) == 60
    reads_per_step = [b - a for a, b in zip(steps, steps[1:])]
    assert reads_per_step == [1] * 59, reads.what[-10:]


@pytest.mark.slow  # compiling takes ~10-40 s per agent on a CPU
@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_a_compiled_agent_learns_as_the_eager_one_and_shares_its_checkpoints(algo, tmp_path):
    """--compile true: the same losses and parameters as eager over a few updates (float32 tolerance; SPOT's dropout
    draws from the same generator), also after the loss weight changes (compiled losses must not keep the old one), the
    same state_dict keys, and its checkpoint acts identically in an eager agent."""
    def make(compile_):
        torch.manual_seed(0)
        if algo == "adaptive_bc":
            return RedqBcAgent(5, 2, 1.0, BcConfig(num_critics=4, hidden_dim=32, compile=compile_))
        return SpotAgent(5, 2, 1.0, SpotConfig(lambd=0.1, hidden_dim=32, vae_hidden=32, compile=compile_))

    def run(agent):
        metrics = []
        for i in range(6):
            if i == 3:  # the online loops change the BC weight α / the penalty weight λ between updates
                setattr(agent, "alpha" if algo == "adaptive_bc" else "lambd", 0.02)
            metrics.append(agent.update(batch(seed=i)))
        return metrics

    runs = {}
    for compile_ in (False, True):  # each from the same seed: the updates draw noise from the global generator
        agent = make(compile_)
        torch.manual_seed(1)
        runs[compile_] = agent, run(agent)
    (eager, eager_metrics), (compiled, compiled_metrics) = runs[False], runs[True]
    for i, (m_eager, m_compiled) in enumerate(zip(eager_metrics, compiled_metrics)):
        assert m_eager.keys() == m_compiled.keys()
        for key in m_eager:
            assert float(m_compiled[key]) == pytest.approx(float(m_eager[key]), rel=1e-5, abs=1e-6), (i, key)
    state_eager, state_compiled = eager.state_dict(), compiled.state_dict()
    assert state_eager["actor"].keys() == state_compiled["actor"].keys()
    for name in ("actor", "critic"):
        for key, value in state_eager[name].items():
            torch.testing.assert_close(state_compiled[name][key], value, rtol=1e-5, atol=1e-6)
    reloaded = make(False)
    reloaded.load_state_dict(state_compiled)
    obs = torch.randn(7, 5).numpy()
    torch.testing.assert_close(torch.as_tensor(reloaded.act(obs)), torch.as_tensor(compiled.act(obs)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # compiling takes ~10-40 s per agent on a CPU
@pytest.mark.parametrize("algo", ["adaptive_bc", "spot"])
def test_a_compiled_update_on_a_cpu_keeps_no_bool_masks_for_its_backward(algo):
    """Inductor's default (min-cut) partition saves each ReLU's mask as a bool tensor for the backward, and its C++
    kernels store and load bool vectors ~17x slower than eager's relu: compiled updates ran 0.75-0.9x eager on our CPU.
    common.utils' compiled code saves the forward's float activations instead (common/compile.py)."""
    torch.manual_seed(0)
    if algo == "adaptive_bc":
        agent = RedqBcAgent(5, 2, 1.0, BcConfig(num_critics=4, hidden_dim=32, compile=True))
    else:
        agent = SpotAgent(5, 2, 1.0, SpotConfig(lambd=0.1, hidden_dim=32, vae_hidden=32, compile=True))
    saved = []

    def pack(tensor):
        saved.append(tensor.dtype)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        for i in range(2):  # a critic step, then one with an actor step
            agent.update(batch(seed=i))
    assert torch.float32 in saved  # the hook sees the compiled graphs' saved tensors
    assert torch.bool not in saved, saved
