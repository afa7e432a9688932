"""Each optimized update equals a plain reference implementation (tests/reference/), step for step.

Both implementations get identical weights, identical batches (real rows of the shipped mini dataset, real
terminal rows forced into every batch) and identical random draws, injected (tests/reference/draws.py).
After 1, 2 (the first actor step) and 20 consecutive updates, losses, the gradients each optimizer stepped
with, parameters, target parameters and Adam moments agree: to 1e-10 (relative, per tensor) in float64,
which pins the math, and to 1e-5 in float32, which shows a change of kernels or operation order that shifts
results.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from adaptive_bc.agent import Config as BcConfig
from adaptive_bc.agent import RedqBcAgent
from adaptive_bc.controller import AlphaController
from common.buffer import Batch
from common.datasets import load_dataset
from common.normalizer import ObsNormalizer
from conftest import REPO
from reference import spot_reference as sref
from reference.adaptive_bc_reference import ReferenceRedqBc, reference_alpha_trajectory
from reference.draws import Draws, inject
from spot.agent import Config as SpotConfig
from spot.agent import SpotAgent, VaeTrainer

BATCH, UPDATES, CHECK_AT = 64, 20, (1, 2, 20)
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
MAX_ACTION = 1.0


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(str(REPO / "data" / "hopper-medium-mini.hdf5"))


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def make_batches(dataset, dtype, n=UPDATES, seed=0) -> list[Batch]:
    """Real rows; the first 4 rows of each batch are real terminal transitions (no bootstrapping)."""
    rng = np.random.default_rng(seed)
    terminal_rows = np.flatnonzero(dataset.terminals)
    arrays = (dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals)
    batches = []
    for _ in range(n):
        idx = rng.integers(0, len(dataset), BATCH)
        idx[:4] = rng.choice(terminal_rows, 4, replace=False)
        batches.append(Batch(*(torch.as_tensor(np.asarray(a[idx], np.float64), dtype=dtype) for a in arrays)))
    assert all(float(b.terminals.sum()) >= 4 for b in batches)
    return batches


def normalizer_for(dataset, normalize: bool, dtype) -> ObsNormalizer:
    norm = (ObsNormalizer.from_observations(dataset.observations) if normalize
            else ObsNormalizer.identity(dataset.obs_dim))
    norm.mean, norm.std = norm.mean.to(dtype), norm.std.to(dtype)
    return norm


def capture_grads(optimizer, sink: dict) -> None:
    """Records the gradient of every parameter at each optimizer step (what Adam actually stepped with)."""
    step = optimizer.step

    def recording_step(*args, **kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                sink[p] = None if p.grad is None else p.grad.detach().clone()
        return step(*args, **kwargs)

    optimizer.step = recording_step


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs reference {tuple(want.shape)}"
    scale = want.norm().item()
    diff = (got - want).norm().item()
    rel = diff / scale if scale > 0 else diff
    assert rel <= tol, f"{name}: relative difference {rel:.3g} > {tol:g}"


def scalar(value) -> torch.Tensor:
    """A metric (a float, or the 0-dim tensor an update returns) as a float64 tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(value, dtype=torch.float64)


def assert_same_tensors(what: str, got: dict, want: dict, tol: float) -> None:
    assert got.keys() == want.keys()
    for key in got:
        assert_close(f"{what} {key}", got[key], want[key], tol)


def adam_moments(optimizers) -> dict:
    """parameter -> (exp_avg, exp_avg_sq) over the given optimizers."""
    out = {}
    for optimizer in optimizers:
        for p, state in optimizer.state.items():
            out[p] = (state["exp_avg"], state["exp_avg_sq"])
    return out


def compare_views(label: str, views_opt, views_ref, tol: float) -> None:
    """views_*(f) -> {name: tensor} in the optimized layout, f mapping a parameter to the tensor to compare."""
    assert_same_tensors(f"{label} parameter", views_opt(lambda p: p), views_ref(lambda p: p), tol)


# --- adaptive_bc -----------------------------------------------------------------------------------------------
def named_views(actor_lin, critics_stacked, vae_parts=None):
    """Named tensors in the optimized layout: actor l1..l3, critic weights [N, in, out] and biases [N, 1, out]
    (both critics are a common.ensemble.EnsembleMLP), the VAE's parameters. Returns views(f): f maps a parameter
    to the tensor compared (itself, its gradient, an Adam moment)."""

    def views(f):
        out = {}
        for k, (weight, bias) in enumerate(actor_lin):
            out[f"actor.l{k + 1}.weight"], out[f"actor.l{k + 1}.bias"] = f(weight), f(bias)
        for k, (weight, bias) in enumerate(critics_stacked):
            out[f"critic.weights.{k}"], out[f"critic.biases.{k}"] = weight(f), bias(f)
        for name, value in (vae_parts or {}).items():
            out[f"vae.{name}"] = value(f)
        return out

    return views


def bc_opt_views(agent: RedqBcAgent, target=False):
    actor = agent.actor_target if target else agent.actor
    critic = agent.critic_target if target else agent.critic
    actor_lin = [(lin.weight, lin.bias) for lin in (actor.l1, actor.l2, actor.l3)]
    stacked = [(lambda f, w=w: f(w), lambda f, b=b: f(b)) for w, b in zip(critic.net.weights, critic.net.biases)]
    return named_views(actor_lin, stacked)


def bc_ref_views(ref: ReferenceRedqBc, target=False):
    actor = ref.actor_target if target else ref.actor
    critics = ref.critic_targets if target else ref.critics
    actor_lin = [(lin.weight, lin.bias) for lin in actor.layers]
    stacked = [(lambda f, k=k: torch.stack([f(c.layers[k].weight).T for c in critics]),
                lambda f, k=k: torch.stack([f(c.layers[k].bias)[None] for c in critics])) for k in range(3)]
    return named_views(actor_lin, stacked)


def copy_bc_weights(agent: RedqBcAgent, ref: ReferenceRedqBc) -> None:
    with torch.no_grad():
        for actor_o, actor_r in ((agent.actor, ref.actor), (agent.actor_target, ref.actor_target)):
            for lin, lin_r in zip((actor_o.l1, actor_o.l2, actor_o.l3), actor_r.layers):
                lin_r.weight.copy_(lin.weight)
                lin_r.bias.copy_(lin.bias)
        for ensemble, critics in ((agent.critic, ref.critics), (agent.critic_target, ref.critic_targets)):
            for i, critic in enumerate(critics):
                for k, layer in enumerate(critic.layers):
                    layer.weight.copy_(ensemble.net.weights[k][i].T)
                    layer.bias.copy_(ensemble.net.biases[k][i, 0])


def bc_draws(n: int, act_dim: int, num_critics: int, use_min: bool, dtype) -> list[Draws]:
    g = torch.Generator().manual_seed(1)
    return [Draws(normal=[torch.randn(BATCH, act_dim, generator=g, dtype=dtype)],
                  perm=[] if use_min else [torch.randperm(num_critics, generator=g)]) for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("target", ["redq", "min"])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw-states", "normalized-states"])
def test_adaptive_bc_update_equals_reference(dataset, dtype, target, normalize):
    tol = TOLERANCE[dtype]
    cfg = BcConfig(hidden_dim=64, normalize_states=normalize, target=target, tau=0.01, gamma=0.98,
                   actor_lr=5e-4, critic_lr=7e-4)
    alpha = 0.3  # not the default 0.4
    torch.manual_seed(0)
    with default_dtype(dtype):
        norm = normalizer_for(dataset, normalize, dtype)
        agent = RedqBcAgent(dataset.obs_dim, dataset.act_dim, MAX_ACTION, cfg, "cpu", norm)
        agent.normalizer = norm
        agent.alpha = alpha
        agent.use_min_target = target == "min"
        ref = ReferenceRedqBc(dataset.obs_dim, dataset.act_dim, MAX_ACTION, num_critics=cfg.num_critics,
                              num_target_critics=cfg.num_target_critics, hidden_dim=cfg.hidden_dim, gamma=cfg.gamma,
                              tau=cfg.tau, actor_lr=cfg.actor_lr, critic_lr=cfg.critic_lr,
                              policy_delay=cfg.policy_delay, target_noise=cfg.target_noise, noise_clip=cfg.noise_clip,
                              alpha=alpha, obs_mean=norm.mean, obs_std=norm.std, use_min_target=target == "min")
    copy_bc_weights(agent, ref)
    draws = bc_draws(UPDATES, dataset.act_dim, cfg.num_critics, target == "min", dtype)
    # adaptive_bc reports the last actor step's metrics on every update: compare them on actor steps only
    update_both_and_compare(agent, ref, make_batches(dataset, dtype), draws, lambda target: bc_opt_views(agent, target),
                            lambda target: bc_ref_views(ref, target), tol, ("critic_loss", "actor_loss"),
                            reported_only_on_actor_steps=False)


def update_both_and_compare(agent, ref, batches, draws, opt_views, ref_views, tol, loss_keys,
                            reported_only_on_actor_steps=True) -> None:
    """Runs both updates on the same batches and draws; compares the losses every update and, after 1, 2 and 20
    updates, parameters, target parameters, the gradients each optimizer stepped with and the Adam moments.
    opt_views / ref_views(target: bool) -> named views (named_views)."""
    grads_opt, grads_ref = {}, {}
    for optimizer in (agent.actor_optimizer, agent.critic_optimizer):
        capture_grads(optimizer, grads_opt)
    for optimizer in (ref.actor_optimizer, ref.critic_optimizer):
        capture_grads(optimizer, grads_ref)
    compare_views("initial", opt_views(False), ref_views(False), 0.0)
    compare_views("initial target", opt_views(True), ref_views(True), 0.0)
    for i, (batch, draw) in enumerate(zip(batches, draws), start=1):
        with inject(draw):
            got = agent.update(batch)
        with inject(draw):
            want = ref.update(*batch)
        for key in loss_keys:
            if reported_only_on_actor_steps:
                assert (key in got) == (key in want), f"update {i}: {key} reported by one implementation only"
            if key in want:
                assert_close(f"update {i} {key}", scalar(got[key]), scalar(want[key]), tol)
        if i not in CHECK_AT:
            continue
        compare_views(f"after {i} updates:", opt_views(False), ref_views(False), tol)
        compare_views(f"after {i} updates: target", opt_views(True), ref_views(True), tol)
        assert_same_tensors(f"after {i} updates: gradient", _with_actor_steps(opt_views(False), grads_opt.__getitem__, i),
                            _with_actor_steps(ref_views(False), grads_ref.__getitem__, i), tol)
        moments_opt = adam_moments((agent.actor_optimizer, agent.critic_optimizer))
        moments_ref = adam_moments((ref.actor_optimizer, ref.critic_optimizer))
        for m, name in enumerate(("exp_avg", "exp_avg_sq")):
            assert_same_tensors(f"after {i} updates: Adam {name}",
                                _with_actor_steps(opt_views(False), lambda p: moments_opt[p][m], i),
                                _with_actor_steps(ref_views(False), lambda p: moments_ref[p][m], i), tol)


def _with_actor_steps(views, f, updates: int, actor_prefix: str = "actor.") -> dict:
    """The views' tensors; actor entries only once an actor step has happened (policy_delay 2)."""
    if updates >= 2:
        return views(f)
    sentinel = object()
    out = views(lambda p: f(p) if _has(f, p) else sentinel)
    return {k: v for k, v in out.items() if not k.startswith(actor_prefix) and v is not sentinel}


def _has(f, p) -> bool:
    try:
        f(p)
        return True
    except KeyError:
        return False


# --- spot ------------------------------------------------------------------------------------------------------
def spot_opt_views(agent: SpotAgent, target=False, vae=False):
    actor = agent.actor_target if target else agent.actor
    critic = agent.critic_target if target else agent.critic
    actor_lin = [(lin.weight, lin.bias) for lin in (actor.l1, actor.l2, actor.l3)]
    layers = [(lambda f, w=w: f(w), lambda f, b=b: f(b)) for w, b in zip(critic.net.weights, critic.net.biases)]
    return named_views(actor_lin, layers, vae_opt_parts(agent.vae) if vae else None)


def vae_opt_parts(vae):
    return {name: (lambda f, p=p: f(p)) for name, p in vae.named_parameters()}


def vae_ref_parts(vae: sref.VAE):
    """The reference VAE in the optimized layout: encoder.4 is the fused [mean; log-std] head."""
    parts = {}
    for opt_name, lin in (("encoder.0", vae.e1), ("encoder.2", vae.e2), ("decoder.0", vae.d1), ("decoder.2", vae.d2),
                          ("decoder.4", vae.d3)):
        parts[f"{opt_name}.weight"] = lambda f, lin=lin: f(lin.weight)
        parts[f"{opt_name}.bias"] = lambda f, lin=lin: f(lin.bias)
    parts["encoder.4.weight"] = lambda f: torch.cat([f(vae.mean_head.weight), f(vae.log_std_head.weight)])
    parts["encoder.4.bias"] = lambda f: torch.cat([f(vae.mean_head.bias), f(vae.log_std_head.bias)])
    return parts


def spot_ref_views(ref: sref.ReferenceSpot, target=False, vae=False):
    actor = ref.actor_target if target else ref.actor
    q1, q2 = (ref.q1_target, ref.q2_target) if target else (ref.q1, ref.q2)
    actor_lin = [(lin.weight, lin.bias) for lin in (actor.l1, actor.l2, actor.l3)]
    layers = [(lambda f, n=n: torch.stack([f(getattr(q, n).weight).T for q in (q1, q2)]),
               lambda f, n=n: torch.stack([f(getattr(q, n).bias)[None] for q in (q1, q2)])) for n in ("l1", "l2", "l3")]
    return named_views(actor_lin, layers, vae_ref_parts(ref.vae) if vae else None)


def copy_vae_weights(vae_opt, vae_ref: sref.VAE) -> None:
    latent = vae_ref.latent_dim
    with torch.no_grad():
        for idx, lin in ((0, vae_ref.e1), (2, vae_ref.e2)):
            lin.weight.copy_(vae_opt.encoder[idx].weight)
            lin.bias.copy_(vae_opt.encoder[idx].bias)
        head = vae_opt.encoder[4]
        vae_ref.mean_head.weight.copy_(head.weight[:latent])
        vae_ref.mean_head.bias.copy_(head.bias[:latent])
        vae_ref.log_std_head.weight.copy_(head.weight[latent:])
        vae_ref.log_std_head.bias.copy_(head.bias[latent:])
        for idx, lin in ((0, vae_ref.d1), (2, vae_ref.d2), (4, vae_ref.d3)):
            lin.weight.copy_(vae_opt.decoder[idx].weight)
            lin.bias.copy_(vae_opt.decoder[idx].bias)


def copy_spot_weights(agent: SpotAgent, ref: sref.ReferenceSpot) -> None:
    with torch.no_grad():
        for actor_o, actor_r in ((agent.actor, ref.actor), (agent.actor_target, ref.actor_target)):
            for n in ("l1", "l2", "l3"):
                getattr(actor_r, n).weight.copy_(getattr(actor_o, n).weight)
                getattr(actor_r, n).bias.copy_(getattr(actor_o, n).bias)
        for twin, qs in ((agent.critic, (ref.q1, ref.q2)), (agent.critic_target, (ref.q1_target, ref.q2_target))):
            for i, q in enumerate(qs):
                for k, n in enumerate(("l1", "l2", "l3")):
                    getattr(q, n).weight.copy_(twin.net.weights[k][i].T)
                    getattr(q, n).bias.copy_(twin.net.biases[k][i, 0])
    copy_vae_weights(agent.vae, ref.vae)


def spot_draws(n, act_dim, latent, hidden, dropout, num_samples, policy_delay, dtype) -> list[Draws]:
    """Per update: target noise and the target actor's two dropout masks; on actor steps also the actor's two
    masks and the density penalty's latent noise."""
    g = torch.Generator().manual_seed(2)

    def masks(k):
        return [torch.bernoulli(torch.full((BATCH, hidden), 1.0 - dropout, dtype=dtype), generator=g)
                for _ in range(k)] if dropout > 0 else []

    draws = []
    for i in range(1, n + 1):
        d = Draws(normal=[torch.randn(BATCH, act_dim, generator=g, dtype=dtype)], masks=masks(2))
        if i % policy_delay == 0:
            d.masks += masks(2)
            d.normal.append(torch.randn(BATCH, num_samples, latent, generator=g, dtype=dtype))
        draws.append(d)
    return draws


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("dropout", ["0", "0.1-uniform-masks", "0.1-bernoulli-masks"])
@pytest.mark.parametrize("penalty", ["elbo", "iwae"])
def test_spot_update_equals_reference(dataset, dtype, dropout, penalty):
    """Both mask sources (spot's dropout_masks) apply the injected keep-masks: one draw of 2 for both layers as
    uniforms, or F.dropout per layer as the reference's nn.Dropout."""
    tol = TOLERANCE[dtype]
    num_samples = 1 if penalty == "elbo" else 4
    dropout, masks = (0.0, "uniform") if dropout == "0" else (0.1, dropout.split("-")[1])
    cfg = SpotConfig(hidden_dim=64, vae_hidden=48, actor_dropout=dropout, dropout_masks=masks, iwae=penalty == "iwae",
                     num_samples=num_samples, lambd=0.3, tau=0.01, gamma=0.98, actor_lr=5e-4, critic_lr=7e-4,
                     beta=0.4)
    torch.manual_seed(0)
    with default_dtype(dtype):
        norm = normalizer_for(dataset, True, dtype)
        agent = SpotAgent(dataset.obs_dim, dataset.act_dim, MAX_ACTION, cfg, "cpu", norm)
        agent.normalizer = norm
        latent = agent.vae.latent_dim
        ref = sref.ReferenceSpot(dataset.obs_dim, dataset.act_dim, MAX_ACTION, hidden_dim=cfg.hidden_dim,
                                 dropout=dropout, vae_hidden=cfg.vae_hidden, latent_dim=latent, gamma=cfg.gamma,
                                 tau=cfg.tau, actor_lr=cfg.actor_lr, critic_lr=cfg.critic_lr,
                                 policy_delay=cfg.policy_delay, target_noise=cfg.target_noise,
                                 noise_clip=cfg.noise_clip, lambd=cfg.lambd, beta=cfg.beta, iwae=cfg.iwae,
                                 num_samples=num_samples, obs_mean=norm.mean, obs_std=norm.std)
    copy_spot_weights(agent, ref)
    vae_before = {k: v.clone() for k, v in agent.vae.state_dict().items()}
    draws = spot_draws(UPDATES, dataset.act_dim, latent, cfg.hidden_dim, dropout, num_samples, cfg.policy_delay, dtype)
    compare_views("initial", spot_opt_views(agent, vae=True), spot_ref_views(ref, vae=True), 0.0)
    update_both_and_compare(agent, ref, make_batches(dataset, dtype), draws, lambda target: spot_opt_views(agent, target),
                            lambda target: spot_ref_views(ref, target), tol, ("critic_loss", "actor_loss", "density_loss"))
    # The frozen VAE: the penalty's gradient reached the action only; the VAE's weights never changed.
    assert all(p.grad is None for p in agent.vae.parameters())
    assert all(torch.equal(v, vae_before[k]) for k, v in agent.vae.state_dict().items())
    compare_views("after the updates:", named_views([], [], vae_opt_parts(agent.vae)),
                  named_views([], [], vae_ref_parts(ref.vae)), 0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_spot_vae_training_step_equals_reference(dataset, dtype):
    tol = TOLERANCE[dtype]
    beta, lr = 0.4, 2e-3
    torch.manual_seed(0)
    with default_dtype(dtype):
        norm = normalizer_for(dataset, True, dtype)
        agent = SpotAgent(dataset.obs_dim, dataset.act_dim, MAX_ACTION, SpotConfig(vae_hidden=48, hidden_dim=16),
                          "cpu", norm)
        trainer = VaeTrainer(agent.vae, norm, lr=lr, beta=beta, total_steps=UPDATES)
        ref_vae = sref.VAE(dataset.obs_dim, dataset.act_dim, MAX_ACTION, 48, agent.vae.latent_dim)
        ref_optimizer = torch.optim.Adam(ref_vae.parameters(), lr=lr, foreach=False)
    copy_vae_weights(agent.vae, ref_vae)
    grads_opt, grads_ref = {}, {}
    capture_grads(trainer.optimizer, grads_opt)
    capture_grads(ref_optimizer, grads_ref)
    g = torch.Generator().manual_seed(3)
    views_opt = named_views([], [], vae_opt_parts(agent.vae))
    views_ref = named_views([], [], vae_ref_parts(ref_vae))
    for i, batch in enumerate(make_batches(dataset, dtype), start=1):
        draw = Draws(normal=[torch.randn(BATCH, agent.vae.latent_dim, generator=g, dtype=dtype)])
        with inject(draw):
            got = trainer.update(batch)
        with inject(draw):
            loss, recon, kl = sref.vae_training_loss(ref_vae, (batch.observations - norm.mean) / norm.std,
                                                     batch.actions, beta)
            ref_optimizer.zero_grad()
            loss.backward()
            ref_optimizer.step()
        for key, value in (("vae_loss", loss), ("vae_recon_loss", recon), ("vae_kl_loss", kl)):
            assert_close(f"update {i} {key}", scalar(got[key]), value, tol)
        if i in CHECK_AT:
            compare_views(f"after {i} VAE updates:", views_opt, views_ref, tol)
            assert_same_tensors(f"after {i} VAE updates: gradient", views_opt(grads_opt.__getitem__),
                                views_ref(grads_ref.__getitem__), tol)
            for m, name in enumerate(("exp_avg", "exp_avg_sq")):
                moments_opt, moments_ref = adam_moments([trainer.optimizer]), adam_moments([ref_optimizer])
                assert_same_tensors(f"after {i} VAE updates: Adam {name}", views_opt(lambda p: moments_opt[p][m]),
                                    views_ref(lambda p: moments_ref[p][m]), tol)
    # Training ends frozen: the policy stage's penalty must not move the VAE.
    assert not any(p.requires_grad for p in agent.vae.parameters())


def test_injected_dropout_is_torch_dropout():
    """The injected mask reproduces nn.Dropout: x · mask / (1 − p) with the mask torch itself drew."""
    torch.manual_seed(5)
    x = torch.randn(64, 32)
    layer = torch.nn.Dropout(0.25)
    torch.manual_seed(6)
    real = layer(x)
    torch.manual_seed(6)
    mask = (layer(torch.ones_like(x)) != 0).to(x.dtype)
    with inject(Draws(masks=[mask])):
        injected = layer(x)
    assert torch.allclose(injected, real, rtol=1e-6, atol=0)


# --- the adaptive BC weight ------------------------------------------------------------------------------------
def test_alpha_controller_equals_reference_over_scripted_episodes():
    kp, kd, r_target, alpha_max = 3e-5, 1e-4, 1.05, 0.4
    rng = np.random.default_rng(0)
    episodes = []
    # steady improvement far below target: alpha falls to 0 and stays there
    episodes += [(0.45 + 0.0003 * k + rng.normal(0, 0.02), 1000) for k in range(300)]
    # a collapse: short, bad episodes far below the running score drive the Kd term up to the cap
    episodes += [(max(0.0, 0.02 + rng.normal(0, 0.01)), int(rng.integers(20, 200))) for _ in range(200)]
    # recovery and noisy episodes of every length
    episodes += [(float(np.clip(0.2 + 0.002 * k + rng.normal(0, 0.15), -0.1, 1.2)), int(rng.integers(1, 1001)))
                 for k in range(600)]
    initial = 0.45

    controller = AlphaController(alpha_max=alpha_max, kp=kp, kd=kd, r_target=r_target)
    alpha = controller.start(initial)
    got = []
    for score, length in episodes:
        alpha = controller.episode_end(alpha, score, length)
        got.append((alpha, controller.r_avg))
    want = reference_alpha_trajectory(initial, episodes, alpha_max=alpha_max, kp=kp, kd=kd, r_target=r_target)

    assert len(want) >= 1000
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-12, atol=1e-15)
    alphas = np.array([a for a, _ in want])
    r_avgs = np.array([initial] + [r for _, r in want[:-1]])
    scores = np.array([s for s, _ in episodes])
    # the script exercises every branch: the floor, the cap (reached again after leaving it) and the Kd term
    assert (alphas == 0.0).sum() >= 50
    first_below_cap = int(np.argmax(alphas < alpha_max))
    assert (alphas[first_below_cap:] == alpha_max).sum() >= 5
    kd_active = scores < r_avgs
    assert kd_active.sum() >= 100
    assert math.isclose(alpha, want[-1][0], rel_tol=1e-12, abs_tol=1e-15)
